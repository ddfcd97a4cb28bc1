"""A node's PoC for one round at a time: generation (local engine or a big node) and Gonka's validation.

``POST /api/v1/pow/init/generate`` starts a round. Without delegation the engine's ``Generator`` runs
on this machine's GPUs (or CPU); with ``DELEGATION_URL`` and ``DELEGATION_AUTH_TOKEN`` the round goes to
the big node through ``DelegationClient``. Either way one loop wakes every ``poll_s`` and takes the
new batches. For the node's own key it signs each (kind 21004) and posts it to the hub's
``/v1/poc/batches``; for a foreign key (only with the MLNode API on, SPEC §8.3) it posts Gonka's
``ProofBatch`` to the caller's ``{url}/generated`` and signs nothing. Transient failures back off and
retry the same batch, so deliveries stay in order; a hub that says the round is closed ends generation;
a batch for another key or round is never delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from gpupool import crypto
from gpupool.core.poc_batch import Batch
from gpupool.errors import Conflict, GpupoolError, TokenInvalid
from gpupool.node.hub_client import HubClient
from gpupool.pow.callback import GENERATED, Backoff, callback_base, post_once
from gpupool.pow.delegation_client import DelegationClient
from gpupool.pow.rounds import BatchGenerator, PowRound, end_loop, engine_generator
from gpupool.pow.validation import Compute, ValidationRound, Validator

log = logging.getLogger("gpupool.pow")

ROUND_OVER = {"round_closed", "unknown_round"}
FOREIGN_KEY = "public_key is not this node's key; a node proves only for itself"
NOT_RUNNING = "PoW is not running"
NODE_NOT_SET = "Node ID and node count must be set to start generating"
MAX_SUBMIT_NONCES = 5000  # per signed request: well under the hub's 10 000 and its 1 MiB body limit


def coalesce(batches: list[Batch], max_nonces: int = MAX_SUBMIT_NONCES) -> list[Batch]:
    """Join consecutive batches of one round, key and node id into submissions of ``max_nonces`` at most.

    The engine sends a batch per computed step; a hub request per step would be hundreds a second on
    a big node. Joined, every nonce is still signed by the node, in fewer and larger requests.
    """
    out: list[Batch] = []
    run: list[Batch] = []
    for batch in batches:
        if not len(batch):
            continue
        key = (batch.public_key, batch.block_hash, batch.block_height, batch.node_id)
        if run and key != (run[0].public_key, run[0].block_hash, run[0].block_height, run[0].node_id):
            out.extend(Batch.merge(run).split(max_nonces))
            run = []
        run.append(batch)
    if run:
        out.extend(Batch.merge(run).split(max_nonces))
    return out


def signed_batch(key: crypto.KeyPair, batch: Batch, created_at: int) -> dict[str, Any]:
    """The hub's ``POST /v1/poc/batches`` body: the batch, and a kind-21004 event over it by ``key``."""
    body = {
        "public_key": batch.public_key,
        "block_hash": batch.block_hash,
        "block_height": batch.block_height,
        "node_id": batch.node_id,
        "nonces": list(batch.nonces),
        "dist": list(batch.dist),
    }
    return crypto.sign_body(key, crypto.KIND_POC_BATCH, body, created_at=created_at)


@dataclass
class RoundTally:
    started_at: float
    batches_received: int = 0
    batches_submitted: int = 0
    nonces_submitted: int = 0
    batches_rejected: int = 0
    foreign_batches: int = 0
    last_error: str | None = None
    ended_because: str | None = None
    rejections: list[str] = field(default_factory=list)


class LocalSource:
    """The engine on this machine, behind the same three calls as ``DelegationClient``."""

    def __init__(self, generator: BatchGenerator) -> None:
        self.generator = generator

    async def open(self) -> None:
        await asyncio.to_thread(self.generator.start)

    async def fetch(self) -> list[Batch]:
        return await asyncio.to_thread(self.generator.drain)

    async def close(self) -> None:
        await asyncio.to_thread(self.generator.stop)


class PowService:
    """The node's generation state; one round at a time, a new round replaces the current one."""

    def __init__(
        self,
        key: crypto.KeyPair,
        hub_url: str | None,
        *,
        delegation_url: str | None = None,
        delegation_token: str | None = None,
        poll_s: float = 5.0,
        backoff_max_s: float = 30.0,
        max_submit_nonces: int = MAX_SUBMIT_NONCES,
        device: str = "auto",
        generator_factory: Callable[[PowRound], BatchGenerator] | None = None,
        serve_foreign: bool = False,
        validate_compute: Compute | None = None,
    ) -> None:
        self.key = key
        self.serve_foreign = serve_foreign  # GPUPOOL_NODE_MLNODE_API: prove for keys other than ours
        self._compute = validate_compute
        self.init_request: tuple[PowRound, str | None, bool] | None = None  # round, url, node ids given
        self.validator: Validator | None = None
        self._callback: str | None = None
        self.hub_url = hub_url.rstrip("/") if hub_url else None
        self.delegation_url = (delegation_url or "").strip().rstrip("/") or None
        self.delegation_token = (delegation_token or "").strip() or None
        self.poll_s = poll_s
        self.max_submit_nonces = max_submit_nonces
        self.backoff_max_s = backoff_max_s
        self._factory = generator_factory or (lambda r: engine_generator(r, device))
        self.pow_round: PowRound | None = None
        self.state = "IDLE"
        self.tally: RoundTally | None = None
        self._source: LocalSource | DelegationClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._http: httpx.AsyncClient | None = None  # to a Gonka callback base
        self._hub: HubClient | None = None  # to our hub
        self._lock = asyncio.Lock()

    @property
    def delegation_mode(self) -> bool:
        return self.delegation_url is not None and self.delegation_token is not None

    # -- control ---------------------------------------------------------------------------------------
    def is_own(self, public_key: str) -> bool:
        return public_key == self.key.pubkey

    def check_key(self, pow_round: PowRound, url: str | None) -> str | None:
        """The callback base a round's batches go to: None for our own key (the hub), else ``url``."""
        if self.is_own(pow_round.public_key):
            return None
        if not self.serve_foreign:
            raise Conflict(FOREIGN_KEY, code="foreign_key")
        return callback_base(url)

    @property
    def running(self) -> bool:
        """Gonka's ``is_running``: a round was initialised and not stopped since."""
        return self.init_request is not None

    async def init(self, pow_round: PowRound, url: str | None, node_ids_given: bool) -> None:
        """``/pow/init``: remember the round, stop whatever ran; no phase yet (Gonka's IDLE)."""
        async with self._lock:
            await self._halt()
            await self._halt_validation()
            self.init_request = (pow_round, url, node_ids_given)
            self.pow_round, self.state, self.tally, self._source = None, "IDLE", None, None

    async def phase_generate(self) -> None:
        if self.init_request is None:
            raise Conflict(NOT_RUNNING, code="pow_not_running")
        pow_round, url, node_ids_given = self.init_request
        if not node_ids_given:
            raise Conflict(NODE_NOT_SET, code="node_not_set")
        await self.start(pow_round, url)

    async def phase_validate(self, pow_round: PowRound | None = None, url: str | None = None) -> None:
        """Enter validation: generation stops; with a ``url`` verdicts go there (Gonka's flow)."""
        if pow_round is None:
            if self.init_request is None:
                raise Conflict(NOT_RUNNING, code="pow_not_running")
            pow_round, url, _ = self.init_request
        base = callback_base(url) if url and self.serve_foreign else None  # opt-in only
        async with self._lock:
            await self._halt()
            if self.init_request is None or self.init_request[:2] != (pow_round, url):
                self.init_request = (pow_round, url, False)
            current = self.validator.vround if self.validator else None
            wanted = ValidationRound.of(pow_round, base) if base else None
            if current != wanted:
                await self._halt_validation()
                if wanted is not None:
                    self.validator = Validator(
                        wanted, compute=self._compute, backoff_max_s=self.backoff_max_s
                    )
            self.state = "VALIDATING"

    async def start(self, pow_round: PowRound, url: str | None = None) -> None:
        """Generate ``pow_round``: signed to the hub for our key, to ``{url}/generated`` for another."""
        callback = self.check_key(pow_round, url)
        async with self._lock:
            if self._generating(pow_round, callback):
                return  # Gonka re-sends init/generate; restarting would hand out the same nonces again
            await self._halt()
            await self._halt_validation()
            if self.init_request is None or self.init_request[:2] != (pow_round, url):
                self.init_request = (pow_round, url, True)
            self.pow_round, self.state, self._callback = pow_round, "LOADING", callback
            self.tally = RoundTally(time.time())
            self._stop = asyncio.Event()
            self._http = httpx.AsyncClient(timeout=30)  # to a callback base: not the hub
            self._hub = HubClient(self.hub_url or "", timeout_s=30, backoff_max_s=self.backoff_max_s)
            if self.delegation_mode:
                assert self.delegation_url is not None and self.delegation_token is not None
                big = httpx.AsyncClient(base_url=self.delegation_url, timeout=30)
                self._source = DelegationClient(big, self.delegation_token, pow_round)
            else:
                self._source = LocalSource(await asyncio.to_thread(self._factory, pow_round))
            self._task = asyncio.create_task(self._run(self._source))

    def _generating(self, pow_round: PowRound, callback: str | None) -> bool:
        alive = self._task is not None and not self._task.done()
        return alive and (self.pow_round, self._callback) == (pow_round, callback)

    async def stop(self) -> None:
        async with self._lock:
            await self._halt()
            await self._halt_validation()
            self.init_request = None
            if self.state != "IDLE":
                self.state = "STOPPED"

    async def _halt_validation(self) -> None:
        if self.validator is not None:
            await self.validator.stop()
            self.validator = None

    async def _halt(self, grace_s: float = 15.0) -> None:
        """End the loop; a loop stuck on an unreachable big node or hub is cancelled after ``grace_s``."""
        self._stop.set()
        await end_loop(self._task, grace_s)
        self._task = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._hub is not None:
            await self._hub.aclose()
            self._hub = None

    # -- the loop --------------------------------------------------------------------------------------
    async def _run(self, source: LocalSource | DelegationClient) -> None:
        tally, backoff = self.tally, Backoff(max_s=self.backoff_max_s)
        assert tally is not None
        pending: list[Batch] = []
        opened = False
        try:
            while not self._stop.is_set():
                try:
                    if not opened:
                        await source.open()
                        opened = True
                    fresh = await source.fetch()
                    tally.batches_received += len(fresh)
                    pending = coalesce([*pending, *fresh], self.max_submit_nonces)
                    self._refresh_state(source)
                    while pending and not self._stop.is_set():
                        outcome = await self._submit(pending[0], tally)
                        pending.pop(0)
                        if outcome in ROUND_OVER:
                            tally.ended_because = outcome
                            self._stop.set()
                    backoff.reset()
                    wait = self.poll_s
                except TokenInvalid as exc:
                    self.state = "ERROR"
                    tally.last_error = f"big node refused the token: {exc.message}"
                    log.error("delegation: %s", tally.last_error)
                    wait = backoff.next()
                except (GpupoolError, httpx.HTTPError, OSError) as exc:
                    tally.last_error = getattr(exc, "message", None) or repr(exc)
                    log.warning("PoC round: %s; retrying", tally.last_error)
                    wait = backoff.next()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait)
        finally:
            with contextlib.suppress(GpupoolError, httpx.HTTPError, OSError):
                if isinstance(source, DelegationClient):
                    await source.close()
                    await source._http.aclose()
                else:
                    await source.close()
            self.state = "STOPPED" if tally.ended_because is None else "ROUND_CLOSED"

    def _refresh_state(self, source: LocalSource | DelegationClient) -> None:
        if isinstance(source, DelegationClient):
            status = source.session_status
        else:
            status = str(source.generator.stats().status)
        self.state = {"initializing": "LOADING", "generating": "GENERATING", "error": "ERROR"}.get(
            status, "GENERATING" if status in ("stopped", "expired") else status.upper()
        )

    async def _submit(self, batch: Batch, tally: RoundTally) -> str:
        """Deliver one batch (signed to the hub, or to the callback); an outcome, or raises to retry."""
        if self.pow_round is None or not self.pow_round.owns(batch):
            tally.foreign_batches += 1  # never sign what is not this node's own round and key
            log.warning("dropping a batch for another key or round (block %s)", batch.block_height)
            return "foreign"
        if not len(batch):
            return "empty"
        assert self._http is not None and self._hub is not None
        if self._callback is not None:
            await post_once(self._http, self._callback, GENERATED, batch.to_dict())  # raises: retried
            tally.batches_submitted += 1
            tally.nonces_submitted += len(batch)
            return "accepted"
        body = signed_batch(self.key, batch, int(time.time()))
        resp = await self._hub.request("POST", "/v1/poc/batches", json=body)  # 5xx, 429: retried there
        if resp.status_code >= 500 or resp.status_code == 429:
            raise httpx.HTTPStatusError(
                f"hub answered {resp.status_code}", request=resp.request, response=resp
            )
        if resp.status_code >= 400:
            code = _error_code(resp)
            tally.batches_rejected += 1
            tally.rejections = [*tally.rejections[-9:], code]
            tally.last_error = f"hub refused a batch: {code} (HTTP {resp.status_code})"
            log.warning("%s", tally.last_error)
            return code
        tally.batches_submitted += 1
        tally.nonces_submitted += len(batch)
        return "accepted"

    # -- status ----------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """``GET /api/v1/pow/status``: the spec's fields first, then the round's throughput."""
        body: dict[str, Any] = {
            "status": self.state,
            "is_model_initialized": self.state in ("GENERATING", "VALIDATING"),
            "delegation_mode": self.delegation_mode,
        }
        if self.validator is not None:
            body["validation"] = {
                "batches_received": self.validator.received,
                "batches_pending": self.validator.pending,
                "last_error": self.validator.last_error,
            }
        source, tally = self._source, self.tally
        gpu_count: int | None = None
        rate: dict[str, Any] = {}
        if isinstance(source, DelegationClient):
            gpu_count = source.gpu_count
            rate = {
                "session_id": source.session_id,
                "sessions_started": source.sessions_started,
                **source.remote,
            }
        elif isinstance(source, LocalSource):
            stats = source.generator.stats()
            gpu_count = int(source.generator.gpu_count)
            rate = {
                "nonces_per_s": stats.nonces_per_s,
                "qualified_per_s": stats.qualified_per_s,
                "nonces_computed": stats.nonces_computed,
                "nonces_qualified": stats.nonces_qualified,
            }
        if gpu_count is not None:
            body["gpu_count"] = gpu_count
        if self.pow_round is not None and tally is not None:
            elapsed = max(time.time() - tally.started_at, 1e-9)
            body["round"] = {
                "block_hash": self.pow_round.block_hash,
                "block_height": self.pow_round.block_height,
            }
            body["qualified_per_s"] = round(tally.nonces_submitted / elapsed, 3)
            body.update(rate)
            body.update(
                batches_received=tally.batches_received,
                batches_submitted=tally.batches_submitted,
                nonces_submitted=tally.nonces_submitted,
                batches_rejected=tally.batches_rejected,
                last_error=tally.last_error,
                ended_because=tally.ended_because,
            )
        return body


def _error_code(resp: httpx.Response) -> str:
    try:
        data = resp.json()
        error = data.get("error") or {}
        reason = error.get("details", {}).get("reason") if isinstance(error.get("details"), dict) else None
        return str(reason or error.get("code") or data.get("detail") or resp.status_code)
    except (ValueError, AttributeError):
        return str(resp.status_code)
