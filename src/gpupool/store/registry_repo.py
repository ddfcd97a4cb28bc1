"""Registry storage: seed-000 workers, the allowlist, owner API keys, miners, sessions, replay cache."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.store.prepared import Prepared
from gpupool.store.tables import allowlist, miners, node_sessions, owner_api_keys, seen_events, workers

_CLAIM_EVENTS = Prepared.insert(seen_events, ("id", "expires_at"))
_ADD_SESSIONS = Prepared.insert(node_sessions, ("token_hash", "miner_id", "expires_at", "revoked"))
# What a registration leaves as it was: what the hub measured and learned about the node over time.
_MINER_KEPT = frozenset({"miner_id", "trust", "latency_ms", "poc_weight", "telemetry", "registered_at"})


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    pubkey: str
    owner: str | None
    node_type: str
    status: str
    signed: bool
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class MinerRecord:
    miner_id: str
    pubkey: str | None  # None for an account-bound node: it has no key of its own
    owner: str
    spec: dict[str, Any]
    status: str
    trust: float
    latency_ms: float | None
    poc_weight: int
    telemetry: dict[str, Any] | None
    registered_at: float
    last_seen: float
    identity: str = "signed"  # signed | api_key | user_token (core.model.Identity)
    bound_to: str | None = None  # the API key id or username an account-bound node answers to


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    owner: str
    label: str
    created_at: float
    revoked_at: float | None
    created_by: str | None = None
    admits: bool = True  # issued by an admin: a node it registers is admitted in allowlist mode


_API_KEY_COLUMNS = [owner_api_keys.c[name] for name in ApiKeyRecord.__slots__]


@dataclass(frozen=True, slots=True)
class NewSession:
    token_hash: str
    miner_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Standing:
    """What a registration keeps of a node registered before: its id, and what the hub measured."""

    miner_id: str
    pubkey: str | None  # None for an account-bound node
    trust: float
    latency_ms: float | None
    poc_weight: int
    registered_at: float


_STANDING = [miners.c[name] for name in Standing.__slots__]


def _upsert_miners(dialect: str) -> Any:
    """Insert a node or, registered before, replace what a registration says (many rows, one statement)."""
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(miners).values(
        {c: bindparam(c) for c in MinerRecord.__slots__}
    )
    changes = {c: stmt.excluded[c] for c in MinerRecord.__slots__ if c not in _MINER_KEPT}
    return stmt.on_conflict_do_update(index_elements=["miner_id"], set_=changes)


_UPSERT_MINERS = Prepared(_upsert_miners)


@dataclass(frozen=True, slots=True)
class HotUpdate:
    """What a heartbeat changed, written behind in batches."""

    miner_id: str
    status: str
    last_seen: float
    telemetry: dict[str, Any] | None


def _miner(row: Any) -> MinerRecord:
    data = row._asdict()
    data["spec"] = json.loads(data["spec"])
    data["telemetry"] = json.loads(data["telemetry"]) if data["telemetry"] else None
    return MinerRecord(**data)


class RegistryRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self._insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert

    # seed-000 workers -------------------------------------------------------------------------
    async def worker(self, pubkey: str) -> WorkerRecord | None:
        row = (await self.conn.execute(select(workers).where(workers.c.pubkey == pubkey))).first()
        return WorkerRecord(**row._asdict()) if row else None

    async def put_worker(self, record: WorkerRecord) -> None:
        values = {k: getattr(record, k) for k in WorkerRecord.__slots__}
        stmt = self._insert(workers).values(**values)
        changes = {k: values[k] for k in ("owner", "node_type", "status", "signed", "updated_at")}
        await self.conn.execute(stmt.on_conflict_do_update(index_elements=["pubkey"], set_=changes))

    async def workers_by_status(self, status: str | None, limit: int, offset: int) -> list[WorkerRecord]:
        query = select(workers).order_by(workers.c.created_at, workers.c.pubkey).limit(limit).offset(offset)
        if status:
            query = query.where(workers.c.status == status)
        return [WorkerRecord(**r._asdict()) for r in await self.conn.execute(query)]

    # allowlist ----------------------------------------------------------------------------------
    async def allow(self, entry: str, kind: str, created_by: str, now: float) -> None:
        stmt = self._insert(allowlist).values(entry=entry, kind=kind, created_by=created_by, created_at=now)
        await self.conn.execute(stmt.on_conflict_do_nothing(index_elements=["entry"]))

    async def disallow(self, entry: str) -> bool:
        return (await self.conn.execute(delete(allowlist).where(allowlist.c.entry == entry))).rowcount == 1

    async def allowed(self, *entries: str) -> bool:
        row = await self.conn.execute(
            select(allowlist.c.entry).where(allowlist.c.entry.in_(entries)).limit(1)
        )
        return row.first() is not None

    async def allowlist_entries(self) -> list[dict[str, Any]]:
        rows = await self.conn.execute(select(allowlist).order_by(allowlist.c.created_at))
        return [r._asdict() for r in rows]

    # owner API keys -----------------------------------------------------------------------------
    async def add_api_key(self, record: ApiKeyRecord, key_hash: str) -> None:
        values = {k: getattr(record, k) for k in ApiKeyRecord.__slots__}
        await self.conn.execute(insert(owner_api_keys).values(**values, key_hash=key_hash))

    async def api_key_owner(self, key_hash: str) -> str | None:
        record = await self.api_key(key_hash)
        return record.owner if record is not None else None

    async def api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The live (unrevoked) key with this hash."""
        row = await self.conn.execute(
            select(*_API_KEY_COLUMNS).where(
                owner_api_keys.c.key_hash == key_hash, owner_api_keys.c.revoked_at.is_(None)
            )
        )
        found = row.first()
        return ApiKeyRecord(**found._asdict()) if found else None

    async def api_keys(self, owner: str | None, created_by: str | None = None) -> list[ApiKeyRecord]:
        query = select(*_API_KEY_COLUMNS).order_by(owner_api_keys.c.created_at)
        if owner:
            query = query.where(owner_api_keys.c.owner == owner)
        if created_by:
            query = query.where(owner_api_keys.c.created_by == created_by)
        return [ApiKeyRecord(**r._asdict()) for r in await self.conn.execute(query)]

    async def api_key_by_id(self, key_id: str) -> ApiKeyRecord | None:
        row = (
            await self.conn.execute(select(*_API_KEY_COLUMNS).where(owner_api_keys.c.id == key_id))
        ).first()
        return ApiKeyRecord(**row._asdict()) if row else None

    async def revoke_api_key(self, key_id: str, now: float) -> bool:
        result = await self.conn.execute(
            update(owner_api_keys)
            .where(owner_api_keys.c.id == key_id, owner_api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return result.rowcount == 1

    # miners -------------------------------------------------------------------------------------
    async def put_miner(self, record: MinerRecord) -> None:
        values = {k: getattr(record, k) for k in MinerRecord.__slots__}
        values["spec"] = json.dumps(record.spec, sort_keys=True)
        values["telemetry"] = json.dumps(record.telemetry) if record.telemetry is not None else None
        changes = {
            k: values[k] for k in ("pubkey", "owner", "spec", "status", "last_seen", "identity", "bound_to")
        }
        stmt = self._insert(miners).values(**values)
        await self.conn.execute(stmt.on_conflict_do_update(index_elements=["miner_id"], set_=changes))

    async def put_miners(self, records: Sequence[MinerRecord]) -> None:
        """``put_miner`` for many nodes at once, in node id order (row locks taken in one order)."""
        rows = []
        for record in sorted(records, key=lambda r: r.miner_id):
            values = {k: getattr(record, k) for k in MinerRecord.__slots__}
            values["spec"] = json.dumps(record.spec, sort_keys=True)
            values["telemetry"] = json.dumps(record.telemetry) if record.telemetry is not None else None
            rows.append(values)
        await _UPSERT_MINERS.many(self.conn, rows)

    async def miner(self, miner_id: str) -> MinerRecord | None:
        row = (await self.conn.execute(select(miners).where(miners.c.miner_id == miner_id))).first()
        return _miner(row) if row else None

    async def miners_by_id(self, miner_ids: Sequence[str]) -> dict[str, MinerRecord]:
        rows = await self.conn.execute(select(miners).where(miners.c.miner_id.in_(list(set(miner_ids)))))
        return {r.miner_id: _miner(r) for r in rows}

    async def miner_by_pubkey(self, pubkey: str) -> MinerRecord | None:
        row = (await self.conn.execute(select(miners).where(miners.c.pubkey == pubkey))).first()
        return _miner(row) if row else None

    async def standing_by_pubkey(self, pubkeys: Sequence[str]) -> dict[str, Standing]:
        """What the hub knows of each registered key's node, without decoding specs."""
        if not pubkeys:
            return {}
        rows = await self.conn.execute(select(*_STANDING).where(miners.c.pubkey.in_(sorted(set(pubkeys)))))
        return {r.pubkey: Standing(*r) for r in rows}

    async def standing_by_id(self, miner_ids: Sequence[str]) -> dict[str, Standing]:
        if not miner_ids:
            return {}
        rows = await self.conn.execute(
            select(*_STANDING).where(miners.c.miner_id.in_(sorted(set(miner_ids))))
        )
        return {r.miner_id: Standing(*r) for r in rows}

    async def miners_bound_to(self, credential: str, identity: str) -> list[MinerRecord]:
        """The account-bound nodes that answer to one credential (an API key id, a username)."""
        rows = await self.conn.execute(
            select(miners)
            .where(miners.c.bound_to == credential, miners.c.identity == identity)
            .order_by(miners.c.miner_id)
        )
        return [_miner(r) for r in rows]

    async def all_miners(self) -> list[MinerRecord]:
        return [_miner(r) for r in await self.conn.execute(select(miners))]

    async def page_miners(self, status: str | None, limit: int, offset: int) -> tuple[list[MinerRecord], int]:
        query = select(miners).order_by(miners.c.miner_id)
        count = select(func.count()).select_from(miners)
        if status:
            query = query.where(miners.c.status == status)
            count = count.where(miners.c.status == status)
        rows = await self.conn.execute(query.limit(limit).offset(offset))
        total = int((await self.conn.execute(count)).scalar() or 0)
        return [_miner(r) for r in rows], total

    async def write_hot(self, updates: Sequence[HotUpdate]) -> None:
        """One batched UPDATE for many heartbeats (the write-behind flush)."""
        if not updates:
            return
        stmt = (
            update(miners)
            .where(miners.c.miner_id == bindparam("b_id"))
            .values(status=bindparam("b_status"), last_seen=bindparam("b_seen"), telemetry=bindparam("b_tel"))
        )
        await self.conn.execute(
            stmt,
            [
                {
                    "b_id": u.miner_id,
                    "b_status": u.status,
                    "b_seen": u.last_seen,
                    "b_tel": json.dumps(u.telemetry) if u.telemetry is not None else None,
                }
                for u in updates
            ],
        )

    async def set_trust(self, miner_id: str, trust: float, latency_ms: float | None) -> None:
        await self.conn.execute(
            update(miners).where(miners.c.miner_id == miner_id).values(trust=trust, latency_ms=latency_ms)
        )

    async def set_status(self, miner_id: str, status: str, last_seen: float | None = None) -> None:
        values: dict[str, Any] = {"status": status}
        if last_seen is not None:
            values["last_seen"] = last_seen
        await self.conn.execute(update(miners).where(miners.c.miner_id == miner_id).values(**values))

    # sessions -----------------------------------------------------------------------------------
    async def add_session(self, token_hash: str, miner_id: str, expires_at: float) -> None:
        await self.conn.execute(
            insert(node_sessions).values(token_hash=token_hash, miner_id=miner_id, expires_at=expires_at)
        )

    async def add_sessions(self, sessions: Sequence[NewSession]) -> None:
        await _ADD_SESSIONS.many(
            self.conn,
            [
                {
                    "token_hash": s.token_hash,
                    "miner_id": s.miner_id,
                    "expires_at": s.expires_at,
                    "revoked": False,
                }
                for s in sessions
            ],
        )

    async def session(self, token_hash: str) -> tuple[str, float, bool] | None:
        row = (
            await self.conn.execute(
                select(node_sessions.c.miner_id, node_sessions.c.expires_at, node_sessions.c.revoked).where(
                    node_sessions.c.token_hash == token_hash
                )
            )
        ).first()
        return (row[0], float(row[1]), bool(row[2])) if row else None

    async def renew_sessions(self, renewals: Sequence[tuple[str, float]]) -> None:
        if not renewals:
            return
        stmt = (
            update(node_sessions)
            .where(node_sessions.c.token_hash == bindparam("b_hash"))
            .values(expires_at=bindparam("b_exp"))
        )
        await self.conn.execute(stmt, [{"b_hash": h, "b_exp": e} for h, e in renewals])

    async def revoke_sessions(self, miner_id: str) -> None:
        await self.conn.execute(
            update(node_sessions).where(node_sessions.c.miner_id == miner_id).values(revoked=True)
        )

    async def revoke_sessions_of(self, miner_ids: Sequence[str]) -> None:
        if miner_ids:
            await self.conn.execute(
                update(node_sessions)
                .where(node_sessions.c.miner_id.in_(sorted(set(miner_ids))))
                .values(revoked=True)
            )

    async def prune_sessions(self, now: float) -> int:
        result = await self.conn.execute(
            delete(node_sessions).where(
                (node_sessions.c.expires_at < now) | node_sessions.c.revoked.is_(True)
            )
        )
        return int(result.rowcount)

    # replay cache -------------------------------------------------------------------------------
    async def claim_event(self, event_id: str, expires_at: float) -> bool:
        """True the first time an event id is seen; False for a replay (any replica, any restart)."""
        stmt = (
            self._insert(seen_events)
            .values(id=event_id, expires_at=expires_at)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(seen_events.c.id)
        )
        return (await self.conn.execute(stmt)).first() is not None

    async def seen(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these event ids were accepted before."""
        rows = await self.conn.execute(select(seen_events.c.id).where(seen_events.c.id.in_(list(event_ids))))
        return set(rows.scalars())

    async def claim_events(self, claims: Sequence[tuple[str, float]]) -> None:
        """Record events believed new; one accepted before (a replay, a race) fails the whole call."""
        await _CLAIM_EVENTS.many(self.conn, [{"id": i, "expires_at": e} for i, e in claims])

    async def prune_events(self, now: float) -> int:
        return int(
            (await self.conn.execute(delete(seen_events).where(seen_events.c.expires_at < now))).rowcount
        )
