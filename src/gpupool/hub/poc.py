"""Proof-of-compute rounds on the hub (SPEC §3.6): open a round, take signed batches, validate, weigh.

An admin opens a round with a fresh random ``block_hash``; registered nodes submit signed (kind 21004)
batches of qualifying nonces until it closes. A batch claiming a distance that does not qualify is
refused at the door (422 ``non_qualifying``): the reference treats such a claim as fraud outright, and
refusing it keeps the stored claims to ones validation must actually check. A nonce claimed twice by
one node counts once (its first claim is kept).

Closing a round recomputes, per node, a sample of its unique nonces (``core.poc.validate_batch`` with
the hub's key as validator) in a worker thread, stores the verdict, sets the node's ``poc_weight`` and
records a ``poc`` contribution scored by the weight, once per round and node however often the round
is closed. A node found cheating gets weight 0 and no contribution.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool import crypto
from gpupool.core import poc
from gpupool.core.model import Principal
from gpupool.core.ports import Clock
from gpupool.errors import Conflict, Forbidden, GpupoolError, InvalidInput, NotFound
from gpupool.hub.live import LiveRegistry
from gpupool.hub.metrics import HubMetrics
from gpupool.hub.signatures import SignedRequests
from gpupool.store.db import Database
from gpupool.store.poc_repo import CLOSED, OPEN, VALIDATED, NodeClaims, PocRepo, ResultRecord, RoundRecord
from gpupool.store.registry_repo import RegistryRepo
from gpupool.store.rewards_repo import RewardsRepo

log = logging.getLogger(__name__)

MAX_BATCH_NONCES = 10_000
DEFAULT_BATCH_SIZE = 100

Recompute = Callable[[str, Sequence[int]], npt.NDArray[np.float64]]


@dataclass(frozen=True, slots=True)
class PocConfig:
    round_sec: int
    validator_pubkey: str
    device: str = "auto"  # auto | cpu | cuda: where the hub recomputes sampled nonces


@dataclass(frozen=True, slots=True)
class BatchIn:
    public_key: str
    block_hash: str
    block_height: int
    node_id: int
    nonces: Sequence[int]
    dist: Sequence[float]


def round_view(record: RoundRecord) -> dict[str, Any]:
    return {
        "block_hash": record.block_hash,
        "block_height": record.block_height,
        "params": record.params,
        "params_name": record.params_name,
        "r_target": record.r_target,
        "fraud_threshold": record.fraud_threshold,
        "batch_size": record.batch_size,
        "status": record.status,
        "opened_at": record.opened_at,
        "closes_at": record.closes_at,
        "closed_at": record.closed_at,
    }


def result_view(result: ResultRecord) -> dict[str, Any]:
    return {k: v for k, v in asdict(result).items() if k != "block_height"}


def contribution_ref(height: int, public_key: str) -> str:
    """The (source, ref) key that makes a round's contribution to a node count once (64 chars max)."""
    return f"{height}:{public_key[:44]}"


def make_recompute(block_hash: str, params: poc.ModelParams, device: str) -> Recompute:
    """``distances`` of the round's network: torch on CUDA when asked or available, else NumPy."""
    model = poc.PocModel.build(block_hash, params)
    if device in ("auto", "cuda"):
        from gpupool.core import poc_torch  # lazy: torch is optional

        if poc_torch.torch_available():
            import torch  # type: ignore[import-not-found,unused-ignore]

            if torch.cuda.is_available():
                return poc_torch.TorchPocModel(model, "cuda", "float16").distances
        if device == "cuda":
            raise InvalidInput("device cuda asked for but torch with CUDA is not available", field="device")
    return model.distances


def validate_node(
    claims: NodeClaims, record: RoundRecord, validator_pubkey: str, recompute: Recompute
) -> poc.ValidationResult:
    """Merge a node's batches and check a sample of them (CPU-heavy: run it off the event loop)."""
    batches = [
        poc.Batch(
            claims.public_key, record.block_hash, record.block_height, tuple(n), tuple(d), claims.node_id
        )
        for n, d in claims.batches
    ]
    if not batches:
        return poc.ValidationResult(0, 0, 1.0, False, 0)
    merged = poc.Batch.merge(batches)
    return poc.validate_batch(merged, recompute, validator_pubkey, record.r_target, record.fraud_threshold)


class PocService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        signed: SignedRequests,
        live: LiveRegistry,
        metrics: HubMetrics,
        epoch_of: Callable[[float], int],
        config: PocConfig,
    ) -> None:
        self.db = db
        self.clock = clock
        self.signed = signed
        self.live = live
        self.metrics = metrics
        self.epoch_of = epoch_of
        self.config = config
        self._close_lock = asyncio.Lock()

    # --- rounds ---------------------------------------------------------------------------------------

    async def open_round(
        self,
        admin: Principal,
        *,
        params_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        r_target: float | None = None,
        duration_sec: int | None = None,
        batch_size: int | None = None,
        fraud_threshold: float | None = None,
    ) -> dict[str, Any]:
        """Open the next round; refused while another round is still open and not yet due."""
        if not admin.is_admin:
            raise Forbidden("only an admin can open a PoC round")
        if params_name is not None and params is not None:
            raise InvalidInput("give params_name or params, not both", field="params")
        name: str | None = None
        if params is not None:
            model_params = poc.ModelParams.from_dict(dict(params))
        else:
            name = params_name or "v1"
            model_params = poc.params_named(name)
        now = self.clock.now()
        duration = duration_sec if duration_sec is not None else self.config.round_sec

        async def work(conn: AsyncConnection) -> RoundRecord:
            repo = PocRepo(conn)
            current = await repo.open_round()
            if current is not None and current.closes_at > now:
                raise Conflict(f"round {current.block_height} is still open", code="round_open")
            for height in await repo.heights(OPEN, closes_before=now):
                await repo.close(height, now)  # overdue: validated by the next maintenance pass
            record = RoundRecord(
                block_height=await repo.last_height() + 1,
                block_hash=secrets.token_hex(32),
                params=model_params.to_dict(),
                params_name=name,
                r_target=r_target if r_target is not None else poc.DEFAULT_R_TARGET,
                fraud_threshold=fraud_threshold if fraud_threshold is not None else poc.FRAUD_THRESHOLD,
                batch_size=batch_size or DEFAULT_BATCH_SIZE,
                status=OPEN,
                opened_at=now,
                closes_at=now + duration,
                closed_at=None,
                opened_by=admin.username,
            )
            await repo.add_round(record)
            return record

        try:
            record = await self.db.run(work)
        except IntegrityError as exc:  # another replica opened the same height at the same moment
            raise Conflict("another round was opened at the same time", code="round_open") from exc
        log.info("PoC round %d opened (%s)", record.block_height, record.params_name or "custom params")
        return round_view(record)

    async def current(self) -> dict[str, Any]:
        async with self.db.read() as conn:
            record = await PocRepo(conn).open_round()
        if record is None or record.closes_at <= self.clock.now():
            raise NotFound("no PoC round is open", code="no_open_round")
        return round_view(record)

    async def round(self, height: int) -> dict[str, Any]:
        """A round and, once validated, each node's verdict and weight."""
        async with self.db.read() as conn:
            repo = PocRepo(conn)
            record = await repo.round(height)
            results = await repo.results(height) if record is not None else []
        if record is None:
            raise NotFound(f"no PoC round {height}", code="unknown_round")
        return {**round_view(record), "results": [result_view(r) for r in results]}

    # --- batches ----------------------------------------------------------------------------------------

    async def submit(self, raw: Mapping[str, Any], batch: BatchIn) -> dict[str, Any]:
        """Check the batch's signature, round and claims, then store it (SPEC §3.6)."""
        try:
            out = await self._submit(raw, batch)
        except GpupoolError as exc:
            self.metrics.poc_batches.labels(exc.code).inc()
            raise
        self.metrics.poc_batches.labels("accepted").inc()
        self.metrics.poc_nonces.inc(len(batch.nonces))
        return out

    async def _submit(self, raw: Mapping[str, Any], batch: BatchIn) -> dict[str, Any]:
        if len(batch.nonces) != len(batch.dist):
            raise InvalidInput("nonces and dist differ in length", field="dist")
        if not batch.nonces:
            raise InvalidInput("a batch holds at least one nonce", field="nonces")
        if len(batch.nonces) > MAX_BATCH_NONCES:
            raise InvalidInput(f"a batch holds at most {MAX_BATCH_NONCES} nonces", field="nonces")
        event = self.signed.check(raw, crypto.KIND_POC_BATCH, crypto.normalize_pubkey(batch.public_key))
        claims: dict[int, float] = {}
        for nonce, dist in zip(batch.nonces, batch.dist, strict=True):
            claims.setdefault(int(nonce), float(dist))
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> tuple[int, int, int]:
            repo = PocRepo(conn)
            await self.signed.claim(RegistryRepo(conn), event)
            record = await repo.round(batch.block_height, share_lock=True)
            if record is None or record.block_hash != batch.block_hash:
                raise Conflict("no PoC round with this height and block hash", code="unknown_round")
            if record.status != OPEN or record.closes_at <= now:
                raise Conflict(f"round {record.block_height} is closed", code="round_closed")
            node = await RegistryRepo(conn).miner_by_pubkey(batch.public_key)
            if node is None:
                raise Forbidden("this key is not a registered node", code="not_registered")
            bad = sum(1 for d in claims.values() if not d < record.r_target)
            if bad:
                raise InvalidInput(
                    f"{bad} claimed distances do not qualify (dist >= r_target {record.r_target})",
                    field="dist",
                    code="non_qualifying",
                )
            return await repo.add_batch(
                record.block_height,
                batch.public_key,
                node.miner_id,
                batch.node_id,
                claims,
                len(batch.nonces),
                str(event["id"]),
                now,
            )

        batch_id, _new, total = await self.db.run(work)
        return {
            "batch_id": batch_id,
            "block_height": batch.block_height,
            "nonces_received": len(batch.nonces),
            "unique_nonces_total": total,
        }

    # --- closing and validation ---------------------------------------------------------------------------

    async def close(self, height: int) -> dict[str, Any]:
        """Close a round and validate it; closing again returns the stored results and records nothing."""
        async with self._close_lock:
            now = self.clock.now()

            async def stop(conn: AsyncConnection) -> RoundRecord:
                repo = PocRepo(conn)
                record = await repo.round(height)
                if record is None:
                    raise NotFound(f"no PoC round {height}", code="unknown_round")
                if record.status == OPEN:
                    await repo.close(height, now)
                return record

            record = await self.db.run(stop)
            if record.status != VALIDATED:
                await self._validate(record, now)
        return await self.round(height)

    async def close_due(self) -> list[int]:
        """The maintenance pass: close rounds past ``closes_at`` and finish any left half-validated."""
        now = self.clock.now()
        async with self.db.read() as conn:
            repo = PocRepo(conn)
            due = await repo.heights(OPEN, closes_before=now) + await repo.heights(CLOSED)
        for height in sorted(set(due)):
            await self.close(height)
        return sorted(set(due))

    async def _validate(self, record: RoundRecord, closed_at: float) -> None:
        async with self.db.read() as conn:
            nodes = await PocRepo(conn).claims(record.block_height)
        params = poc.ModelParams.from_dict(record.params)
        verdicts: list[tuple[NodeClaims, poc.ValidationResult]] = []
        if nodes:
            verdicts = await asyncio.to_thread(self._validate_all, record, params, nodes)
        validated_at = self.clock.now()
        results = [
            ResultRecord(
                block_height=record.block_height,
                miner_id=node.miner_id,
                public_key=node.public_key,
                n_batches=node.n_batches,
                n_nonces=sum(len(n) for n, _ in node.batches),
                n_sampled=v.n_sampled,
                n_invalid=v.n_invalid,
                p_value=v.p_value,
                fraud=v.fraud,
                weight=v.weight,
                validated_at=validated_at,
            )
            for node, v in verdicts
        ]
        start = record.opened_at
        end = record.closed_at if record.closed_at is not None else closed_at

        async def store(conn: AsyncConnection) -> bool:
            repo = PocRepo(conn)
            if not await repo.mark_validated(record.block_height):
                return False  # another replica finished it first
            await repo.add_results(results)
            registry, rewards = RegistryRepo(conn), RewardsRepo(conn)
            for result in results:
                await repo.set_poc_weight(result.miner_id, result.weight)
                node = await registry.miner(result.miner_id)
                if result.fraud or result.weight <= 0 or node is None:
                    continue
                await rewards.add_contribution(
                    {
                        "node_id": result.miner_id,
                        "owner": node.owner,
                        "source": "poc",
                        "ref": contribution_ref(record.block_height, result.public_key),
                        "epoch": self.epoch_of(end),
                        "start_timestamp": start,
                        "end_timestamp": end,
                        "duration_seconds": max(0.0, end - start),
                        "avg_gpu_usage_percent": None,
                        "gpu_memory_used_mb": None,
                        "avg_cpu_usage_percent": None,
                        "memory_used_mb": None,
                        "samples_processed": result.n_nonces,
                        "compute_score": result.weight,
                        "recorded_by": "hub",
                        "reason": None,
                    }
                )
            return True

        if not await self.db.run(store):
            return
        for result in results:
            self.live.set_poc_weight(result.miner_id, result.weight)
            if result.fraud:
                self.metrics.poc_fraud.inc()
        self.metrics.poc_rounds_validated.inc()
        log.info(
            "PoC round %d validated: %d nodes, %d found cheating",
            record.block_height,
            len(results),
            sum(r.fraud for r in results),
        )

    def _validate_all(
        self, record: RoundRecord, params: poc.ModelParams, nodes: list[NodeClaims]
    ) -> list[tuple[NodeClaims, poc.ValidationResult]]:
        recompute = make_recompute(record.block_hash, params, self.config.device)
        return [(n, validate_node(n, record, self.config.validator_pubkey, recompute)) for n in nodes]
