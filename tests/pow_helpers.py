"""A generator whose steps the test drives: real PoC distances (PARAMS_TINY), produced on demand.

The engine's ``Generator`` computes in worker processes at its own pace; session and drain tests need
to say exactly when batches appear, so this one computes a step only when ``produce()`` is called.
"""

from __future__ import annotations

from gpupool.core.poc import PARAMS_TINY, Batch, PocModel, nonce_range
from gpupool.pow.engine import GenerationStats
from gpupool.pow.rounds import PowRound

BLOCK_HASH = "5b1f" * 16


class ScriptedGenerator:
    def __init__(self, pow_round: PowRound, gpu_count: int = 8) -> None:
        self.pow_round = pow_round
        self.gpu_count = gpu_count
        self.state = "initializing"
        self.started = self.stopped = False
        self._k = 0
        self._ready: list[Batch] = []
        self.computed = 0

    def start(self) -> None:
        self.started, self.state = True, "generating"

    def produce(self, steps: int = 1) -> list[Batch]:
        """Compute ``steps`` batches of ``batch_size`` nonces; keep the qualifying part of each."""
        r = self.pow_round
        model = PocModel.build(r.block_hash, r.params)
        made = []
        for _ in range(steps):
            nonces = nonce_range(r.node_id, r.node_count, 0, 1, self._k, r.batch_size)
            self._k += r.batch_size
            dist = model.distances(r.public_key, nonces)
            full = Batch(
                r.public_key, r.block_hash, r.block_height, tuple(nonces), tuple(dist.tolist()), r.node_id
            )
            made.append(full.qualifying(r.r_target))
            self.computed += len(nonces)
        self._ready.extend(made)
        return made

    def drain(self) -> list[Batch]:
        out, self._ready = self._ready, []
        return out

    def stop(self, timeout: float = 10.0) -> None:
        self.stopped, self.state = True, "stopped"

    def stats(self) -> GenerationStats:
        return GenerationStats(self.state, self.gpu_count, nonces_computed=self.computed)


class ScriptedFactory:
    """Builds ScriptedGenerators and remembers them, so a test can drive and inspect each."""

    def __init__(self, gpu_count: int = 8, fail: bool = False) -> None:
        self.gpu_count, self.fail = gpu_count, fail
        self.made: list[ScriptedGenerator] = []

    def __call__(self, pow_round: PowRound) -> ScriptedGenerator:
        if self.fail:
            raise RuntimeError("CUDA out of memory")
        gen = ScriptedGenerator(pow_round, self.gpu_count)
        self.made.append(gen)
        return gen


def tiny_round(public_key: str, **fields: object) -> PowRound:
    values: dict[str, object] = {
        "block_hash": BLOCK_HASH,
        "block_height": 7,
        "public_key": public_key,
        "params": PARAMS_TINY,
        "batch_size": 32,
    }
    values.update(fields)
    return PowRound(**values)  # type: ignore[arg-type]
