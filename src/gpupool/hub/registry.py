"""Who may join the pool: seed-000 worker records, the allowlist, owner API keys, miner registration.

An unsigned ``POST /workers`` (what the DStack backend sends) proves nothing about the key, so it is
stored as ``pending`` and never binds a key to an owner by itself; an admin's approval or a later
registration signed by that key authorizes it. In ``allowlist`` mode a key may register only when it,
its owner, or an owner API key presented with it was admitted by an admin.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool import crypto
from gpupool.core.model import Principal
from gpupool.core.ports import Clock
from gpupool.errors import Conflict, Forbidden, InvalidInput, NotFound, SignatureRejected
from gpupool.hub.enrolment import Enrolment, Enrolments, owner_address
from gpupool.hub.ledger import LedgerService
from gpupool.hub.live import LiveRegistry, NodeSpec
from gpupool.hub.metrics import HubMetrics
from gpupool.hub.sessions import SessionService, token_hash
from gpupool.hub.signatures import SignedRequests
from gpupool.store.db import Database
from gpupool.store.registry_repo import ApiKeyRecord, MinerRecord, RegistryRepo, WorkerRecord

PENDING, AUTHORIZED = "pending", "authorized"
DEFAULT_TRUST = 0.5


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    mode: str
    session_ttl_s: int
    heartbeat_interval_s: float


@dataclass(frozen=True, slots=True)
class Registration:
    miner_id: str
    status: str
    session_token: str
    lease_ttl_sec: int
    next_heartbeat_sec: float


class RegistryService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        config: RegistryConfig,
        signed: SignedRequests,
        live: LiveRegistry,
        sessions: SessionService,
        ledger: LedgerService,
        metrics: HubMetrics,
    ) -> None:
        self.db = db
        self.clock = clock
        self.config = config
        self.signed = signed
        self.live = live
        self.sessions = sessions
        self.ledger = ledger
        self.metrics = metrics
        self.enrolments = Enrolments(db, self._admitted, config.session_ttl_s)

    # seed 000 ------------------------------------------------------------------------------------
    async def permissions(self, pubkey: str) -> dict[str, Any]:
        pubkey = crypto.normalize_pubkey(pubkey)
        async with self.db.read() as conn:
            repo = RegistryRepo(conn)
            worker = await repo.worker(pubkey)
            authorized = worker is not None and await self._authorized(repo, worker)
        mode = "AllowAll" if authorized else "Deny"
        return {
            "pubkey": pubkey,
            "registered": worker is not None,
            "authorized": authorized,
            "owner": worker.owner if worker and worker.status == AUTHORIZED else None,
            "node_type": worker.node_type if worker else None,
            "read": {"mode": mode},
            "write": {"mode": mode},
        }

    async def register_worker(self, raw: Mapping[str, Any]) -> WorkerRecord:
        """``POST /workers``: signed binds key→owner (subject to the mode); unsigned is pending."""
        pubkey = crypto.normalize_pubkey(str(raw.get("pubkey", "")))
        owner = crypto.normalize_owner_address(str(raw.get("owner", "")))
        node_type = str(raw.get("node_type") or "node-H100x1")
        signed = "sig_event" in raw
        event = self.signed.check(raw, crypto.KIND_REGISTRATION, pubkey) if signed else None
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> WorkerRecord:
            repo = RegistryRepo(conn)
            if event is not None:
                await self.signed.claim(repo, event)
            existing = await repo.worker(pubkey)
            if not signed and existing is not None and existing.status == AUTHORIZED:
                return existing  # an unsigned request never rebinds an authorized key
            status = AUTHORIZED if signed and await self._admitted(repo, pubkey, owner) else PENDING
            record = WorkerRecord(
                pubkey=pubkey,
                owner=owner,
                node_type=node_type,
                status=status,
                signed=signed,
                created_at=existing.created_at if existing else now,
                updated_at=now,
            )
            await repo.put_worker(record)
            return record

        record = await self.db.run(work)
        self.metrics.registrations.labels(f"worker_{record.status}").inc()
        return record

    async def approve_worker(self, pubkey: str) -> WorkerRecord:
        pubkey = crypto.normalize_pubkey(pubkey)

        async def work(conn: AsyncConnection) -> WorkerRecord:
            repo = RegistryRepo(conn)
            worker = await repo.worker(pubkey)
            if worker is None:
                raise NotFound(f"no worker registration for {pubkey}")
            approved = WorkerRecord(
                **{**_fields(worker), "status": AUTHORIZED, "updated_at": self.clock.now()}
            )
            await repo.put_worker(approved)
            return approved

        return await self.db.run(work)

    async def workers(self, status: str | None, page: int, page_size: int) -> list[WorkerRecord]:
        async with self.db.read() as conn:
            return await RegistryRepo(conn).workers_by_status(status, page_size, (page - 1) * page_size)

    # allowlist and owner keys ------------------------------------------------------------------------
    async def allow(self, admin: Principal, entry: str) -> dict[str, str]:
        value, kind = _allow_entry(entry)

        async def work(conn: AsyncConnection) -> None:
            await RegistryRepo(conn).allow(value, kind, admin.username, self.clock.now())

        await self.db.run(work)
        return {"entry": value, "kind": kind}

    async def disallow(self, entry: str) -> None:
        value, _ = _allow_entry(entry)

        async def work(conn: AsyncConnection) -> bool:
            return await RegistryRepo(conn).disallow(value)

        if not await self.db.run(work):
            raise NotFound(f"{value} is not on the allowlist")

    async def allowlist(self) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            return await RegistryRepo(conn).allowlist_entries()

    async def create_api_key(self, owner: str, label: str) -> tuple[ApiKeyRecord, str]:
        """A new owner API key; the key itself is returned once and only its hash is kept."""
        owner = crypto.normalize_owner_address(owner)
        key_id, key = secrets.token_hex(6), "gpk_" + secrets.token_urlsafe(32)
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> None:
            await RegistryRepo(conn).add_api_key(key_id, owner, token_hash(key), label, now)

        await self.db.run(work)
        return ApiKeyRecord(id=key_id, owner=owner, label=label, created_at=now, revoked_at=None), key

    async def api_keys(self, owner: str | None) -> list[ApiKeyRecord]:
        owner = crypto.normalize_owner_address(owner) if owner else None
        async with self.db.read() as conn:
            return await RegistryRepo(conn).api_keys(owner)

    async def revoke_api_key(self, key_id: str) -> None:
        async def work(conn: AsyncConnection) -> bool:
            return await RegistryRepo(conn).revoke_api_key(key_id, self.clock.now())

        if not await self.db.run(work):
            raise NotFound(f"no active API key {key_id}")

    # miners ---------------------------------------------------------------------------------------------
    async def register_miner(
        self, raw: Mapping[str, Any], spec: NodeSpec, api_key: str | None
    ) -> Registration:
        pubkey = crypto.normalize_pubkey(spec.pubkey)
        owner = owner_address(spec.owner)
        try:
            event = self.signed.check(raw, crypto.KIND_REGISTRATION, pubkey)
        except SignatureRejected:
            self.metrics.registrations.labels("bad_signature").inc()
            raise
        now = self.clock.now()
        token = "gps_" + secrets.token_urlsafe(32)
        event_id, claim_until = str(event["id"]), self.signed.expires_at(event)
        enrolment = Enrolment(event_id, claim_until, pubkey, owner, spec, api_key, token_hash(token), now)
        try:
            record = await self.enrolments.submit(enrolment)  # batched with those arriving together
        except SignatureRejected:
            self.metrics.registrations.labels("replayed").inc()
            raise
        except (Forbidden, Conflict):
            self.metrics.registrations.labels("refused").inc()
            raise
        self.live.upsert(record, now)  # the owner's accounts were opened in the registration's transaction
        self.sessions.forget(record.miner_id)
        self.sessions.remember(token, record.miner_id, now + self.config.session_ttl_s)
        self.metrics.registrations.labels("accepted").inc()
        return Registration(
            miner_id=record.miner_id,
            status="online",
            session_token=token,
            lease_ttl_sec=self.config.session_ttl_s,
            next_heartbeat_sec=self.config.heartbeat_interval_s,
        )

    async def set_price(self, miner_id: str, price_micro_per_ksec: int) -> None:
        """A node's new price, stored in its spec and used by the very next match."""

        async def work(conn: AsyncConnection) -> MinerRecord | None:
            repo = RegistryRepo(conn)
            record = await repo.miner(miner_id)
            if record is None:
                return None
            updated = replace(record, spec={**record.spec, "price_token_per_ksec": price_micro_per_ksec})
            await repo.put_miner(updated)
            return updated

        record = await self.db.run(work)
        if record is None:
            raise NotFound(f"no miner {miner_id}")
        self.live.set_price(miner_id, price_micro_per_ksec)

    async def miner(self, miner_id: str) -> MinerRecord:
        async with self.db.read() as conn:
            record = await RegistryRepo(conn).miner(miner_id)
        if record is None:
            raise NotFound(f"no miner {miner_id}")
        return self.live.overlay(record)

    async def miners(self, status: str | None, page: int, page_size: int) -> tuple[list[MinerRecord], int]:
        await self.live.flush()  # so the page reflects the newest heartbeats
        async with self.db.read() as conn:
            records, total = await RegistryRepo(conn).page_miners(status, page_size, (page - 1) * page_size)
        return [self.live.overlay(r) for r in records], total

    async def _admitted(
        self, repo: RegistryRepo, pubkey: str, owner: str, api_key: str | None = None
    ) -> bool:
        if self.config.mode == "open":
            return True
        if await repo.allowed(pubkey, owner.lower()):
            return True
        worker = await repo.worker(pubkey)
        if worker is not None and worker.status == AUTHORIZED and worker.owner == owner and not worker.signed:
            return True  # approved by an admin
        return bool(api_key) and await repo.api_key_owner(token_hash(api_key or "")) == owner

    async def _authorized(self, repo: RegistryRepo, worker: WorkerRecord) -> bool:
        """Whether the registry answers AllowAll for this worker now (admission can be withdrawn)."""
        if worker.status != AUTHORIZED or worker.owner is None:
            return False
        if self.config.mode == "open" or not worker.signed:
            return True  # open pool, or approved by an admin
        return await repo.allowed(worker.pubkey, worker.owner.lower())


def _allow_entry(entry: str) -> tuple[str, str]:
    entry = entry.strip()
    if entry.lower().startswith("0x"):
        return crypto.normalize_owner_address(entry).lower(), "owner"
    try:
        return crypto.normalize_pubkey(entry), "pubkey"
    except InvalidInput as exc:
        raise InvalidInput("an allowlist entry is a node pubkey or an owner address", field="entry") from exc


def _fields(worker: WorkerRecord) -> dict[str, Any]:
    return {k: getattr(worker, k) for k in WorkerRecord.__slots__}
