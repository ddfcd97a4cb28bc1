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
from gpupool.errors import Conflict, Forbidden, InvalidInput, NotFound, SignatureRejected, TokenInvalid
from gpupool.hub.account_bound import PENDING as NODE_PENDING
from gpupool.hub.account_bound import AccountBinding, check_rebind, normalize_account
from gpupool.hub.api_keys import OwnerApiKeys
from gpupool.hub.enrolment import Enrolment, Enrolments, owner_address
from gpupool.hub.ledger import LedgerService
from gpupool.hub.live import LiveRegistry, NodeSpec
from gpupool.hub.metrics import HubMetrics
from gpupool.hub.sessions import SessionService, token_hash
from gpupool.hub.signatures import SignedRequests
from gpupool.store.db import Database
from gpupool.store.registry_repo import MinerRecord, RegistryRepo, WorkerRecord

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
    created: bool = True


class RegistryService(OwnerApiKeys):
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
            # An unsigned registration's owner is shown as named, flagged signed: false (SPEC §8.4);
            # it binds nothing until an admin approves it or the key signs.
            "owner": worker.owner if worker else None,
            "signed": worker.signed if worker else None,
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

    async def worker(self, pubkey: str) -> WorkerRecord:
        """``GET /workers/{pubkey}`` (DStack backend versions that poll it): 404 when unknown."""
        pubkey = crypto.normalize_pubkey(pubkey)
        async with self.db.read() as conn:
            worker = await RegistryRepo(conn).worker(pubkey)
        if worker is None:
            raise NotFound(f"no worker registration for {pubkey}")
        return worker

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

    # account-bound nodes (SPEC §8) ----------------------------------------------------------------
    async def register_with_api_key(self, api_key: str, spec: NodeSpec) -> Registration:
        """An unsigned registration carrying an owner API key (AITBC's miner, GGB's nodes)."""
        return await self.admit_account_bound(await self.api_key_binding(api_key), spec)

    async def admit_account_bound(self, binding: AccountBinding, spec: NodeSpec) -> Registration:
        """Admit a node that cannot sign, bound to the account whose credential vouched for it.

        Registry mode applies: in ``allowlist`` mode the node is ``pending`` (stored, not matched)
        until an admin approves it, unless its owner is on the allowlist or an admin's key admitted
        it. A re-registration keeps the node's trust and an approval already given.
        """
        owner = normalize_account(binding.owner)
        if not spec.miner_id:
            raise InvalidInput("an account-bound node names its miner_id", field="miner_id")
        miner_id, now = spec.miner_id, self.clock.now()
        token = "gps_" + secrets.token_urlsafe(32)

        async def work(conn: AsyncConnection) -> tuple[MinerRecord, bool]:
            repo = RegistryRepo(conn)
            existing = await repo.miner(miner_id)
            check_rebind(existing, binding)
            admitted = (
                self.config.mode == "open"
                or binding.admitted
                or (existing is not None and existing.status != NODE_PENDING)
                or await repo.allowed(owner.lower(), owner)
            )
            record = MinerRecord(
                miner_id=miner_id,
                pubkey=None,
                owner=owner,
                spec=spec.to_json(),
                status="online" if admitted else NODE_PENDING,
                trust=existing.trust if existing else DEFAULT_TRUST,
                latency_ms=existing.latency_ms if existing else None,
                poc_weight=existing.poc_weight if existing else 0,
                telemetry=None,
                registered_at=existing.registered_at if existing else now,
                last_seen=now,
                identity=binding.identity.value,
                bound_to=binding.credential,
            )
            await repo.put_miner(record)
            await repo.revoke_sessions(miner_id)
            await repo.add_session(token_hash(token), miner_id, now + self.config.session_ttl_s)
            return record, existing is None

        try:
            record, created = await self.db.run(work)
        except Conflict:
            self.metrics.registrations.labels("refused").inc()
            raise
        return await self._admitted_registration(record, token, now, created=created)

    async def approve_miner(self, miner_id: str) -> MinerRecord:
        """An admin admits a pending account-bound node: it is matched from now on."""

        async def work(conn: AsyncConnection) -> MinerRecord:
            repo = RegistryRepo(conn)
            record = await repo.miner(miner_id)
            if record is None:
                raise NotFound(f"no miner {miner_id}")
            if record.status == NODE_PENDING:
                record = replace(record, status="online", last_seen=self.clock.now())
                await repo.put_miner(record)
            return record

        record = await self.db.run(work)
        if record.status == "online":
            await self._open_owner(record.owner)
            self.live.upsert(record, record.last_seen)
        return record

    async def bound_miner(self, binding: AccountBinding, miner_id: str | None = None) -> str:
        """The node a credential speaks for: the one bound to it, or the one named among several."""
        async with self.db.read() as conn:
            bound = await RegistryRepo(conn).miners_bound_to(binding.credential, binding.identity.value)
        if miner_id is not None:
            bound = [m for m in bound if m.miner_id == miner_id]
        if not bound:
            raise NotFound(
                "no node is registered with this credential; register first", code="not_registered"
            )
        if len(bound) > 1:
            raise Conflict(
                "several nodes are registered with this credential; name one (X-Miner-ID)",
                code="ambiguous_credential",
            )
        return bound[0].miner_id

    async def node_for_bearer(self, token: str, miner_id: str | None = None) -> str:
        """The node a bearer token speaks for: a session token, or the API key an account-bound node
        was registered with (AITBC's miner heartbeats with its key)."""
        try:
            return await self.sessions.resolve(token, miner_id)
        except TokenInvalid:
            pass
        return await self.bound_miner(await self.api_key_binding(token), miner_id)

    async def _admitted_registration(
        self, record: MinerRecord, token: str, now: float, *, created: bool, owner_open: bool = False
    ) -> Registration:
        expires_at = now + self.config.session_ttl_s
        if record.status != NODE_PENDING:
            if not owner_open:
                await self._open_owner(record.owner)
            self.live.upsert(record, now)
        self.sessions.forget(record.miner_id)
        self.sessions.remember(token, record.miner_id, expires_at)
        self.metrics.registrations.labels("accepted" if record.status != NODE_PENDING else "pending").inc()
        return Registration(
            miner_id=record.miner_id,
            status=record.status,
            session_token=token,
            lease_ttl_sec=self.config.session_ttl_s,
            next_heartbeat_sec=self.config.heartbeat_interval_s,
            created=created,
        )

    async def _open_owner(self, owner: str) -> None:
        if not owner.startswith("user:"):  # a user's account exists since the user does
            await self.ledger.open_owner_account(owner)

    # miners ---------------------------------------------------------------------------------------------
    async def register_miner(
        self, raw: Mapping[str, Any], spec: NodeSpec, api_key: str | None
    ) -> Registration:
        pubkey = crypto.normalize_pubkey(spec.pubkey or "")
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
        # the owner's accounts were opened in the registration's own transaction
        return await self._admitted_registration(
            record, token, now, created=record.registered_at == now, owner_open=True
        )

    async def set_price(self, miner_id: str, price_micro_per_ksec: int) -> None:
        """A node's new price, stored in its spec and used by the very next match."""

        async def work(conn: AsyncConnection) -> MinerRecord | None:
            repo = RegistryRepo(conn)
            record = await repo.miner(miner_id)
            if record is None:
                return None
            updated = replace(record, spec={**record.spec, "price_micro_per_ksec": price_micro_per_ksec})
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
        key = await repo.api_key(token_hash(api_key)) if api_key else None
        return key is not None and key.admits and key.owner == owner

    async def _authorized(self, repo: RegistryRepo, worker: WorkerRecord) -> bool:
        """Whether the registry answers AllowAll for this worker now (admission can be withdrawn)."""
        if worker.status != AUTHORIZED or worker.owner is None:
            return False
        if self.config.mode == "open" or not worker.signed:
            return True  # open pool, or approved by an admin
        return await repo.allowed(worker.pubkey, worker.owner.lower())


def _allow_entry(entry: str) -> tuple[str, str]:
    entry = entry.strip()
    if entry.startswith("user:"):
        return normalize_account(entry, field="entry"), "user"
    if entry.lower().startswith("0x"):
        return crypto.normalize_owner_address(entry).lower(), "owner"
    try:
        return crypto.normalize_pubkey(entry), "pubkey"
    except InvalidInput as exc:
        raise InvalidInput(
            "an allowlist entry is a node pubkey, an owner address or user:<name>", field="entry"
        ) from exc


def _fields(worker: WorkerRecord) -> dict[str, Any]:
    return {k: getattr(worker, k) for k in WorkerRecord.__slots__}
