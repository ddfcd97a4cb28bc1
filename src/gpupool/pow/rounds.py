"""One PoC round as the node's PoW API and the delegation API carry it (Gonka's InitRequest fields).

Both the small node (``POST /api/v1/pow/init/generate``) and the big node (``POST
/api/v1/delegation/start``) receive these fields; ``PowRound`` parses them once, checks them, and
builds the engine's ``Generator`` for them, so the two sides cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gpupool import crypto
from gpupool.core.poc_batch import (
    DEFAULT_R_TARGET,
    FRAUD_THRESHOLD,
    PARAMS_V1,
    Batch,
    ModelParams,
    params_named,
)
from gpupool.errors import InvalidInput

if TYPE_CHECKING:
    from gpupool.pow.engine import GenerationStats


class BatchGenerator(Protocol):
    """What a session needs of ``gpupool.pow.engine.Generator`` (tests may hand in another)."""

    gpu_count: int

    def start(self) -> None: ...
    def drain(self) -> list[Batch]: ...
    def stop(self, timeout: float = 10.0) -> None: ...
    def stats(self) -> GenerationStats: ...


def parse_params(value: object) -> ModelParams:
    """A ``params`` field: a ModelParams object (the reference sends one) or a set's name."""
    if value is None:
        return PARAMS_V1
    if isinstance(value, str):
        return params_named(value)
    if isinstance(value, dict):
        try:
            return ModelParams.from_dict(value)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"params: {exc}", field="params") from exc
    raise InvalidInput("params must be an object or a set name", field="params")


@dataclass(frozen=True)
class PowRound:
    """A round's generation request; ``public_key`` is whose proof it is (never a secret key)."""

    block_hash: str
    block_height: int
    public_key: str
    node_id: int = 0
    node_count: int = 1
    params: ModelParams = PARAMS_V1
    batch_size: int = 100
    r_target: float = DEFAULT_R_TARGET
    fraud_threshold: float = FRAUD_THRESHOLD

    def __post_init__(self) -> None:
        if not self.block_hash.strip():
            raise InvalidInput("block_hash must not be empty", field="block_hash")
        if self.block_height < 0:
            raise InvalidInput("block_height must not be negative", field="block_height")
        if not 0 <= self.node_id < self.node_count:
            raise InvalidInput("need 0 <= node_id < node_count", field="node_id")
        if self.batch_size < 1:
            raise InvalidInput("batch_size must be positive", field="batch_size")
        if not self.r_target > 0:
            raise InvalidInput("r_target must be positive", field="r_target")
        if not 0 < self.fraud_threshold < 1:
            raise InvalidInput("fraud_threshold must be in (0, 1)", field="fraud_threshold")

    @classmethod
    def from_json(cls, data: dict[str, Any], *, public_key: str | None = None) -> PowRound:
        """Parse a request body; ``public_key`` overrides the body's. The key is kept as given (SPEC §8.3)."""
        try:
            key = crypto.poc_public_key(public_key or _text(data.get("public_key")), field="public_key")
            return cls(
                block_hash=str(data["block_hash"]),
                block_height=int(data["block_height"]),
                public_key=key,
                node_id=int(data.get("node_id", 0)),
                node_count=int(data.get("node_count", 1)),
                params=parse_params(data.get("params")),
                batch_size=int(data.get("batch_size", 100)),
                r_target=float(data.get("r_target", DEFAULT_R_TARGET)),
                fraud_threshold=float(data.get("fraud_threshold", FRAUD_THRESHOLD)),
            )
        except KeyError as exc:
            raise InvalidInput(f"{exc.args[0]} is required", field=str(exc.args[0])) from exc
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed round: {exc}", field="body") from exc

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "node_count": self.node_count,
            "block_hash": self.block_hash,
            "block_height": self.block_height,
            "public_key": self.public_key,
            "batch_size": self.batch_size,
            "r_target": self.r_target,
            "fraud_threshold": self.fraud_threshold,
            "params": self.params.to_dict(),
        }

    def owns(self, batch: Batch) -> bool:
        """Whether ``batch`` belongs to this round and key (a node signs nothing else)."""
        return (batch.public_key, batch.block_hash, batch.block_height) == (
            self.public_key,
            self.block_hash,
            self.block_height,
        )


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def engine_generator(pow_round: PowRound, device: str = "auto") -> BatchGenerator:
    """The real engine's Generator for a round (imported here: it pulls in multiprocessing)."""
    from gpupool.pow.engine import Generator

    return Generator(pow_round, device=device)


async def end_loop(task: asyncio.Task[Any] | None, grace_s: float) -> None:
    """Wait up to ``grace_s`` for a loop told to stop; a loop stuck on an unreachable peer is cancelled."""
    if task is None:
        return
    done, _ = await asyncio.wait({task}, timeout=grace_s)
    if not done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
