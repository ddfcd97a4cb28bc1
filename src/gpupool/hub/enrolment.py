"""Node registrations written in batches: a restart storm served at a thousand nodes a second.

After a hub restart every node registers again at once. A transaction of its own per registration (a
commit, an fsync on SQLite, seven statements) held that to about a hundred a second; here the
registrations waiting together share one transaction and a few multi-row statements (the group commit
of ``store.batches``). Each request still gets the answer a transaction of its own would give, in the
same order of checks: replay, then admission, then the node id. A refused request writes nothing (its
event id stays unclaimed, so the node may retry), and a batch the optimistic path cannot answer
exactly (one event id or one node twice in it, an event claimed meanwhile by another replica) is run
again one request at a time.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool import crypto
from gpupool.core.ledger import AccountType, hold_account
from gpupool.core.trust import INITIAL_TRUST
from gpupool.errors import Conflict, Forbidden
from gpupool.hub.live import NodeSpec
from gpupool.hub.signatures import replay_refusal
from gpupool.store.batches import WriteBatcher
from gpupool.store.db import Database
from gpupool.store.ledger_repo import LedgerRepo
from gpupool.store.registry_repo import MinerRecord, NewSession, RegistryRepo, Standing

# A pool has far fewer owners than nodes: the EIP-55 checksum (a keccak) once per owner, not per request.
owner_address = functools.lru_cache(maxsize=65_536)(crypto.normalize_owner_address)

# Whether a key may join: (repo, pubkey, owner, api_key) -> admitted (the registry mode's rule).
Admission = Callable[[RegistryRepo, str, str, str | None], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Enrolment:
    """One verified registration waiting for its transaction (the signature already checked)."""

    event_id: str
    event_expires_at: float
    pubkey: str
    owner: str
    spec: NodeSpec
    api_key: str | None
    token_hash: str
    now: float

    @property
    def wanted_id(self) -> str:
        return self.spec.miner_id or self.pubkey[:16]


class _NeedsOneByOne(Exception):
    """This batch holds something only the one-at-a-time path answers exactly."""


class Enrolments:
    """Registers nodes: ``submit`` answers with the stored record or the request's own refusal."""

    def __init__(
        self, db: Database, admitted: Admission, session_ttl_s: int, *, max_batch: int = 500
    ) -> None:
        self.admitted = admitted
        self.session_ttl_s = session_ttl_s
        self.batcher: WriteBatcher[Enrolment, MinerRecord] = WriteBatcher(
            db, self._apply, alone=self._alone, max_batch=max_batch
        )

    async def submit(self, item: Enrolment) -> MinerRecord:
        return await self.batcher.submit(item)

    async def _alone(
        self, conn: AsyncConnection, items: Sequence[Enrolment]
    ) -> list[MinerRecord | Exception]:
        """The careful path: one registration, each check against the database as it stands."""
        (item,) = items
        repo = RegistryRepo(conn)
        if not await repo.claim_event(item.event_id, item.event_expires_at):
            raise replay_refusal()
        if not await self.admitted(repo, item.pubkey, item.owner, item.api_key):
            raise _not_admitted()
        existing = (await repo.standing_by_pubkey([item.pubkey])).get(item.pubkey)
        taken = None if existing else (await repo.standing_by_id([item.wanted_id])).get(item.wanted_id)
        record = _record(item, existing, taken)
        await self._write(conn, repo, [item], [record])
        return [record]

    async def _apply(
        self, conn: AsyncConnection, items: Sequence[Enrolment]
    ) -> list[MinerRecord | Exception]:
        """The batch path: read what every item needs at once, answer each, write the accepted."""
        repo = RegistryRepo(conn)
        seen = await repo.seen([i.event_id for i in items])  # replays of earlier batches: refused anyway
        fresh = [i for i in items if i.event_id not in seen]
        if len({i.event_id for i in fresh}) < len(fresh) or len({i.pubkey for i in fresh}) < len(fresh):
            raise _NeedsOneByOne("an event or a node twice in one batch")
        by_pubkey = await repo.standing_by_pubkey([i.pubkey for i in fresh])
        taken = await repo.standing_by_id([i.wanted_id for i in fresh if i.pubkey not in by_pubkey])
        answers: list[MinerRecord | Exception] = []
        for item in items:
            answers.append(await self._answer(repo, item, item.event_id in seen, by_pubkey, taken))
        accepted = [(i, a) for i, a in zip(items, answers, strict=True) if isinstance(a, MinerRecord)]
        if len({r.miner_id for _, r in accepted}) < len(accepted):
            raise _NeedsOneByOne("two keys asking for one node id in one batch")
        # A claim another replica made since ``seen`` fails the statement: the batch goes one by one.
        await repo.claim_events(sorted((i.event_id, i.event_expires_at) for i, _ in accepted))
        await self._write(conn, repo, [i for i, _ in accepted], [r for _, r in accepted])
        return answers

    async def _answer(
        self,
        repo: RegistryRepo,
        item: Enrolment,
        replayed: bool,
        by_pubkey: dict[str, Standing],
        taken: dict[str, Standing],
    ) -> MinerRecord | Exception:
        if replayed:
            return replay_refusal()
        if not await self.admitted(repo, item.pubkey, item.owner, item.api_key):
            return _not_admitted()
        existing = by_pubkey.get(item.pubkey)
        try:
            return _record(item, existing, None if existing else taken.get(item.wanted_id))
        except Conflict as exc:
            return exc

    async def _write(
        self,
        conn: AsyncConnection,
        repo: RegistryRepo,
        items: Sequence[Enrolment],
        records: Sequence[MinerRecord],
    ) -> None:
        """Store the nodes, give each one live session (older tokens stop working), open owners' accounts."""
        if not records:
            return
        await repo.put_miners(records)
        await repo.revoke_sessions_of([r.miner_id for r in records])
        await repo.add_sessions(
            [
                NewSession(i.token_hash, r.miner_id, i.now + self.session_ttl_s)
                for i, r in zip(items, records, strict=True)
            ]
        )
        owners, now = sorted({r.owner for r in records}), items[0].now
        ledger = LedgerRepo(conn)
        await ledger.ensure_accounts(owners, AccountType.OWNER.value, now)
        await ledger.ensure_accounts([hold_account(o) for o in owners], AccountType.HOLD.value, now)


def _not_admitted() -> Forbidden:
    return Forbidden("this key is not admitted to the pool", code="not_authorized")


def _record(item: Enrolment, existing: Standing | None, taken: Standing | None) -> MinerRecord:
    """The node as stored after this registration; a node id held by another key is refused."""
    spec, pubkey = item.spec, item.pubkey
    if existing and spec.miner_id and spec.miner_id != existing.miner_id:
        raise Conflict(f"this key is registered as {existing.miner_id}", code="miner_id_mismatch")
    if not existing and taken is not None and taken.pubkey != pubkey:
        raise Conflict(f"miner_id {item.wanted_id} belongs to another node", code="miner_id_taken")
    return MinerRecord(
        miner_id=existing.miner_id if existing else item.wanted_id,
        pubkey=pubkey,
        owner=item.owner,
        spec=spec.to_json(),
        status="online",
        trust=existing.trust if existing else INITIAL_TRUST,
        latency_ms=existing.latency_ms if existing else None,
        poc_weight=existing.poc_weight if existing else 0,
        telemetry=None,
        registered_at=existing.registered_at if existing else item.now,
        last_seen=item.now,
    )
