"""Node sessions: the short-lived token a node got at registration, and what it may do with it.

A session token names exactly one node. It is kept hashed; the hub holds the live sessions in memory
(a dict lookup per heartbeat) and reads the database only on a miss, so a restarted hub still knows
the sessions it issued. Renewals are written behind with the heartbeats.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.core.ports import Clock
from gpupool.errors import Forbidden, TokenInvalid
from gpupool.hub.live import LiveRegistry
from gpupool.hub.throttle import Budget
from gpupool.store.db import Database
from gpupool.store.registry_repo import RegistryRepo


def token_hash(token: str) -> str:
    """Session tokens and API keys are stored as their sha256: a database leak grants nothing."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(slots=True)
class _Session:
    miner_id: str
    expires_at: float


class SessionService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        live: LiveRegistry,
        ttl_s: int,
        failures_by_client: Budget | None = None,
    ) -> None:
        self.db = db
        self._failures_by_client = failures_by_client
        self.clock = clock
        self.live = live
        self.ttl_s = ttl_s
        self._cache: dict[str, _Session] = {}
        self._by_miner: dict[str, set[str]] = {}

    def remember(self, token: str, miner_id: str, expires_at: float) -> None:
        self._put(token_hash(token), miner_id, expires_at)

    def _put(self, key: str, miner_id: str, expires_at: float) -> None:
        self._cache[key] = _Session(miner_id, expires_at)
        self._by_miner.setdefault(miner_id, set()).add(key)

    def _drop(self, key: str) -> None:
        session = self._cache.pop(key, None)
        if session is not None:
            keys = self._by_miner.get(session.miner_id, set())
            keys.discard(key)
            if not keys:
                self._by_miner.pop(session.miner_id, None)

    async def resolve(
        self, token: str, claimed_miner_id: str | None = None, client: str | None = None
    ) -> str:
        """The node a token belongs to; refuses unknown, expired, revoked and borrowed tokens.

        A token this hub does not hold in memory is looked up in the database; with ``client`` (the
        caller's address), a client whose lookups keep failing gets 429 before its next one is made.
        A live node's token is in memory, so its heartbeats never spend that budget.
        """
        key = token_hash(token)
        session = self._cache.get(key)
        if session is None:
            session = await self._load(key, client)
        if session.expires_at < self.clock.now():
            self._drop(key)
            raise TokenInvalid("session expired; register again", code="session_expired")
        if claimed_miner_id is not None and claimed_miner_id != session.miner_id:
            raise Forbidden("this session belongs to another node", code="session_mismatch")
        return session.miner_id

    async def _load(self, key: str, client: str | None) -> _Session:
        budget = self._failures_by_client if client is not None else None
        message = "too many unknown or expired session tokens from this address; try again later"
        if budget is not None and client is not None:
            await budget.check(client, message)
        async with self.db.read() as conn:
            row = await RegistryRepo(conn).session(key)
        if row is None or row[2] or row[1] < self.clock.now():
            if budget is not None and client is not None:
                await budget.hit(client, message)
            if row is None or row[2]:
                raise TokenInvalid("unknown or revoked session; register again", code="session_invalid")
            raise TokenInvalid("session expired; register again", code="session_expired")
        self._put(key, row[0], row[1])
        return self._cache[key]

    def cached_miner(self, token: str) -> str | None:
        session = self._cache.get(token_hash(token))
        return session.miner_id if session is not None else None

    async def lease(self, token: str) -> tuple[str, float]:
        """The node and the expiry of a live session."""
        miner_id = await self.resolve(token)
        return miner_id, self._cache[token_hash(token)].expires_at

    async def renew(self, token: str) -> tuple[str, float]:
        """Extend a live session by its TTL; the new expiry reaches the database with the next flush."""
        miner_id = await self.resolve(token)
        expires_at = self.clock.now() + self.ttl_s
        key = token_hash(token)
        self._put(key, miner_id, expires_at)
        self.live.renew_session(key, expires_at)
        return miner_id, expires_at

    async def beat(
        self,
        token: str,
        queue_len: int,
        telemetry: dict[str, Any] | None,
        claimed_miner_id: str | None = None,
        client: str | None = None,
    ) -> str:
        """One heartbeat: memory only (session renewal and telemetry are written behind)."""
        miner_id = await self.resolve(token, claimed_miner_id, client)
        key = token_hash(token)
        now = self.clock.now()
        self._put(key, miner_id, now + self.ttl_s)
        self.live.renew_session(key, now + self.ttl_s)
        await self.touch(miner_id, queue_len, telemetry)
        return miner_id

    async def touch(self, miner_id: str, queue_len: int, telemetry: dict[str, Any] | None) -> None:
        """A node was heard from (its session, or an account-bound node's credential, proved it)."""
        now = self.clock.now()
        if miner_id not in self.live.nodes:  # silent past the grace period across a hub restart
            async with self.db.read() as conn:
                record = await RegistryRepo(conn).miner(miner_id)
            if record is not None and record.status != "pending":  # pending: stored, not matched
                self.live.upsert(record, now)
        self.live.heartbeat(miner_id, now, queue_len, telemetry)

    async def logout(self, token: str, client: str | None = None) -> str:
        """End every session of the token's node and take the node offline now."""
        miner_id = await self.resolve(token, client=client)

        async def work(conn: AsyncConnection) -> None:
            repo = RegistryRepo(conn)
            await repo.revoke_sessions(miner_id)
            await repo.set_status(miner_id, "offline")

        await self.db.run(work)
        self.forget(miner_id)
        self.live.set_offline(miner_id)
        return miner_id

    def forget(self, miner_id: str) -> None:
        """Drop a node's cached sessions (after logout or a fresh registration revoked them)."""
        for key in list(self._by_miner.get(miner_id, ())):
            self._drop(key)

    def prune(self, now: float) -> int:
        stale = [k for k, s in self._cache.items() if s.expires_at < now]
        for key in stale:
            self._drop(key)
        return len(stale)
