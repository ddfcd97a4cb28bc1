"""PoC generation over all local devices: one worker process per GPU (or one CPU worker).

A round (``PowRound``) is sharded as POC.md gives: worker ``group_id`` of ``n_groups`` on node
``node_id`` of ``node_count`` computes ``nonce_range(node_id, node_count, group_id, n_groups, k, n)``
for k = 0, n, 2n, ... so no two GPUs, and no two nodes of a round, ever compute the same nonce. Each
worker keeps the next inputs in preparation on a small thread pool (NumPy's generators release the
GIL) while the device runs the current step, and sends the qualifying part of every step back as a
``Batch``. The parent only collects: ``drain()`` hands over what arrived since the last call, and
``stats()`` reports round throughput. Workers are spawned processes, so a CUDA context never leaks
into the caller and a crashed worker shows as ``status == "error"`` instead of taking the node down.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gpupool.core.poc import (
    Batch,
    ModelParams,
    PocModel,
    logits_to_distances,
    nonce_inputs,
    nonce_permutations,
    nonce_range,
)
from gpupool.core.poc_torch import cuda_device_count
from gpupool.errors import InvalidInput
from gpupool.pow.rounds import PowRound

log = logging.getLogger(__name__)

STATUSES = ("initializing", "generating", "stopped", "error")
PREFETCH_DEPTH = 3


def round_from_json(data: dict[str, Any]) -> PowRound:
    """A round as ``PowRound.to_json`` wrote it, in a worker process: checked again, changed in nothing."""
    return PowRound(**{**data, "params": ModelParams.from_dict(data["params"])})


@dataclass
class GenerationStats:
    status: str
    gpu_count: int
    nonces_computed: int = 0
    nonces_qualified: int = 0
    batches: int = 0
    nonces_per_s: float = 0.0
    qualified_per_s: float = 0.0
    started_at: float | None = None
    error: str | None = None
    per_worker: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_devices(device: str) -> list[str]:
    """``auto``: every CUDA GPU, else the CPU; ``cuda``: every GPU; ``cpu``; or ``cuda:0,cuda:2``."""
    if device in ("auto", "cuda"):
        n = cuda_device_count()
        if n:
            return [f"cuda:{i}" for i in range(n)]
        if device == "cuda":
            raise InvalidInput("no CUDA GPU is usable here (torch with CUDA is needed)", field="device")
        return ["cpu"]
    devices = [d.strip() for d in device.split(",") if d.strip()]
    if not devices or any(d != "cpu" and not d.startswith("cuda:") for d in devices):
        raise InvalidInput(
            f"unknown device {device!r}: use auto, cpu, cuda or cuda:N[,cuda:M]", field="device"
        )
    return devices


class Generator:
    """Generates one round's batches on local devices until stopped."""

    def __init__(
        self,
        spec: PowRound,
        *,
        device: str = "auto",
        dtype: str = "float16",
        compute_batch: int | None = None,
        compile: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec, self.dtype, self.compile, self._clock = spec, dtype, compile, clock
        self.devices = resolve_devices(device)
        self.gpu_count = sum(1 for d in self.devices if d.startswith("cuda"))
        self.compute_batch = compute_batch or spec.batch_size
        self._ctx = mp.get_context("spawn")
        self._queue: Any = self._ctx.Queue()
        self._stop = self._ctx.Event()
        self._procs: list[Any] = []
        self._lock = threading.Lock()
        self._batches: list[Batch] = []
        self._stats = GenerationStats("initializing", self.gpu_count)
        self._ready: set[int] = set()
        self._collector: threading.Thread | None = None

    @property
    def status(self) -> str:
        return self._stats.status

    def start(self) -> None:
        if self._procs:
            raise InvalidInput("generation already started", field="session")
        args = (self.spec.to_json(), len(self.devices), self.dtype, self.compute_batch, self.compile)
        for group_id, device in enumerate(self.devices):
            proc = self._ctx.Process(
                target=work, args=(*args, group_id, device, self._queue, self._stop), daemon=True
            )
            proc.start()
            self._procs.append(proc)
        self._collector = threading.Thread(target=self._collect, name="poc-collector", daemon=True)
        self._collector.start()

    def _collect(self) -> None:
        live = len(self._procs)
        while live:
            try:
                msg = self._queue.get(timeout=0.5)
            except queue.Empty:
                if not any(p.is_alive() for p in self._procs):
                    self._fail("a generation worker died without a word")
                    return
                continue
            kind, group = msg[0], msg[1]
            with self._lock:
                s = self._stats
                if kind == "ready":
                    self._ready.add(group)
                    if len(self._ready) == len(self._procs) and s.status == "initializing":
                        s.status, s.started_at = "generating", self._clock()
                elif kind == "batch":
                    computed, batch = msg[2], Batch.from_dict(msg[3])
                    s.nonces_computed += computed
                    s.nonces_qualified += len(batch)
                    s.per_worker[group] = s.per_worker.get(group, 0) + computed
                    if len(batch):
                        self._batches.extend(batch.split(self.spec.batch_size))
                        s.batches += 1
                elif kind == "error":
                    s.status, s.error = "error", msg[2]
                    log.error("PoC worker %d failed: %s", group, msg[2])
                    self._stop.set()
                elif kind == "done":
                    live -= 1

    def _fail(self, why: str) -> None:
        with self._lock:
            if self._stats.status not in ("stopped", "error"):
                self._stats.status, self._stats.error = "error", why

    def drain(self) -> list[Batch]:
        with self._lock:
            out, self._batches = self._batches, []
        return out

    def stats(self) -> GenerationStats:
        with self._lock:
            s = GenerationStats(**{**asdict(self._stats), "per_worker": dict(self._stats.per_worker)})
        if s.started_at is not None:
            elapsed = max(self._clock() - s.started_at, 1e-9)
            s.nonces_per_s, s.qualified_per_s = s.nonces_computed / elapsed, s.nonces_qualified / elapsed
        return s

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(2.0)
        if self._collector is not None:
            self._collector.join(2.0)
        with self._lock:
            if self._stats.status != "error":
                self._stats.status = "stopped"

    def __enter__(self) -> Generator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- worker process --------------------------------------------------------------------------------


class _Step:
    """One step's host-side inputs, prepared off the device's critical path."""

    def __init__(self, nonces: list[int], inputs: np.ndarray, perms: np.ndarray) -> None:
        self.nonces, self.inputs, self.perms = nonces, inputs, perms


def work(
    spec_dict: dict[str, Any],
    n_groups: int,
    dtype: str,
    compute_batch: int,
    compile: bool,
    group_id: int,
    device: str,
    out: Any,
    stop: Any,
) -> None:
    """Worker process body: build the round's network on ``device`` and generate until ``stop``."""
    try:
        spec = round_from_json(spec_dict)
        forward = _forward_fn(spec, device, dtype, compile)
        model = PocModel.build(spec.block_hash, spec.params)
        out.put(("ready", group_id))

        def prepare(step: int) -> _Step:
            nonces = nonce_range(
                spec.node_id, spec.node_count, group_id, n_groups, step * compute_batch, compute_batch
            )
            inputs = nonce_inputs(spec.block_hash, spec.public_key, nonces, spec.params)
            perms = nonce_permutations(spec.block_hash, spec.public_key, nonces, spec.params.vocab_size)
            return _Step(nonces, inputs, perms)

        threads = max(1, min(PREFETCH_DEPTH, (os.cpu_count() or 2) // max(n_groups, 1)))
        with ThreadPoolExecutor(threads, thread_name_prefix=f"poc-inputs-{group_id}") as pool:
            pending: deque[Future[_Step]] = deque(pool.submit(prepare, i) for i in range(PREFETCH_DEPTH))
            step = PREFETCH_DEPTH
            while not stop.is_set():
                current = pending.popleft().result()
                pending.append(pool.submit(prepare, step))
                step += 1
                dist = logits_to_distances(forward(current.inputs), current.perms, model.target)
                batch = Batch(
                    spec.public_key,
                    spec.block_hash,
                    spec.block_height,
                    tuple(current.nonces),
                    tuple(dist.tolist()),
                    spec.node_id,
                )
                out.put(("batch", group_id, len(current.nonces), batch.qualifying(spec.r_target).to_dict()))
            for fut in pending:
                fut.cancel()
    except Exception as exc:
        out.put(("error", group_id, f"{type(exc).__name__}: {exc}"))
    finally:
        out.put(("done", group_id))


def _forward_fn(spec: PowRound, device: str, dtype: str, compile: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Inputs (batch, seq, dim) -> last-position logits on the host, on the CPU (NumPy) or a GPU."""
    model = PocModel.build(spec.block_hash, spec.params)
    if device == "cpu":
        return model.logits
    import torch  # type: ignore[import-not-found,unused-ignore]

    from gpupool.core.poc_torch import TorchPocModel

    torch.cuda.set_device(device)
    return TorchPocModel(model, device, dtype, compile=compile).logits
