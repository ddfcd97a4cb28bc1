"""Gonka's validation phase (SPEC §8.3): ``ProofBatch`` in, ``ValidatedBatch`` out to ``{url}/validated``.

Gonka's decentralized-api samples a participant's nonces itself and posts the sample to the ML node's
``/api/v1/pow/validate``; the ML node recomputes every nonce it was sent and posts a ``ValidatedBatch``
(the batch, ``received_dist``, the recomputed ``dist``, ``n_invalid``, ``probability_honest``,
``fraud_detected``) to the url of the round's ``init/validate``. Batches are judged and delivered one at
a time, in the order they arrived; a verdict is retried until accepted and never sent twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from gpupool.core.poc_batch import Batch, ModelParams
from gpupool.errors import InvalidInput, RateLimited
from gpupool.pow.callback import VALIDATED, Backoff, deliver
from gpupool.pow.rounds import PowRound, end_loop

log = logging.getLogger("gpupool.pow")

MAX_VALIDATE_NONCES = 10_000  # Gonka sends 200 per participant; far more is not a validation request
MAX_QUEUED = 1_000

Compute = Callable[[str, ModelParams, str, Sequence[int]], Sequence[float]]


@dataclass(frozen=True)
class ValidationRound:
    """What ``init/validate`` set: the round's network and thresholds, and where verdicts go."""

    block_hash: str
    block_height: int
    params: ModelParams
    r_target: float
    fraud_threshold: float
    url: str

    @classmethod
    def of(cls, pow_round: PowRound, url: str) -> ValidationRound:
        r = pow_round
        return cls(r.block_hash, r.block_height, r.params, r.r_target, r.fraud_threshold, url)


def numpy_or_torch_distances(
    block_hash: str, params: ModelParams, public_key: str, nonces: Sequence[int]
) -> Sequence[float]:
    """Recomputed distances: fp16 on the first GPU when torch sees one, NumPy float32 otherwise."""
    from gpupool.core import poc_torch
    from gpupool.core.poc import PocModel

    model = PocModel.build(block_hash, params)
    if poc_torch.cuda_device_count():
        return [
            float(d)
            for d in poc_torch.TorchPocModel(model, "cuda:0", "float16").distances(public_key, nonces)
        ]
    return [float(d) for d in model.distances(public_key, nonces)]


def validated_batch(batch: Batch, computed: Sequence[float], vround: ValidationRound) -> dict[str, Any]:
    """Gonka's ``ValidatedBatch`` JSON (``pow/data.py``'s fields, in its order) for ``batch``."""
    from gpupool.core.poc import judge_sample

    n_invalid, p_value, fraud = judge_sample(batch.dist, computed, vround.r_target, vround.fraud_threshold)
    return {
        "public_key": batch.public_key,
        "block_hash": batch.block_hash,
        "block_height": batch.block_height,
        "nonces": list(batch.nonces),
        "dist": [float(d) for d in computed],
        "node_id": batch.node_id,
        "received_dist": list(batch.dist),
        "r_target": vround.r_target,
        "fraud_threshold": vround.fraud_threshold,
        "n_invalid": n_invalid,
        "probability_honest": p_value,
        "fraud_detected": fraud,
    }


class Validator:
    """Judges queued batches in arrival order and delivers each verdict to the round's callback."""

    def __init__(
        self, vround: ValidationRound, *, compute: Compute | None = None, backoff_max_s: float = 30.0
    ):
        self.vround = vround
        self._compute = compute or numpy_or_torch_distances
        self._backoff = Backoff(max_s=backoff_max_s)
        self._queue: asyncio.Queue[Batch] = asyncio.Queue()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.received = self.delivered = 0
        self.last_error: str | None = None

    def submit(self, batch: Batch) -> None:
        """Queue one batch; bounded in size and in backlog (422 / 429), never blocking the caller."""
        if len(batch) > MAX_VALIDATE_NONCES:
            raise InvalidInput(f"at most {MAX_VALIDATE_NONCES} nonces per batch to validate", field="nonces")
        if self._queue.qsize() >= MAX_QUEUED:
            raise RateLimited(
                "too many batches waiting for validation", retry_after_s=5, code="validation_backlog"
            )
        self.received += 1
        self._queue.put_nowait(batch)
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    @property
    def pending(self) -> int:
        return self.received - self.delivered

    async def stop(self, grace_s: float = 5.0) -> None:
        self._stop.set()
        await end_loop(self._task, grace_s)
        self._task = None

    async def _run(self) -> None:
        vround = self.vround
        async with httpx.AsyncClient(timeout=10) as http:
            while not self._stop.is_set():
                batch = await self._next()
                if batch is None:
                    continue
                try:
                    computed = await asyncio.to_thread(
                        self._compute, vround.block_hash, vround.params, batch.public_key, batch.nonces
                    )
                    body = validated_batch(batch, computed, vround)
                except Exception as exc:  # a batch that cannot be judged must not stop the ones behind it
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.error(
                        "validation of a batch for block %s failed: %s", batch.block_height, self.last_error
                    )
                    self.delivered += 1
                    continue
                if await deliver(http, vround.url, VALIDATED, body, self._stop, self._backoff):
                    self.delivered += 1

    async def _next(self) -> Batch | None:
        getter = asyncio.ensure_future(self._queue.get())
        stopper = asyncio.ensure_future(self._stop.wait())
        done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if getter in done:
            return getter.result()
        getter.cancel()
        return None
