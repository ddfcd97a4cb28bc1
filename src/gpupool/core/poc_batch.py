"""The PoC's plain data, free of NumPy: parameter sets, batches, nonce sharding, the round's constants.

Split from ``core.poc`` so the node agent, the PoW API and the delegation client can parse rounds and
carry batches without importing NumPy (about 18 MB of the agent's resident memory); everything that
computes lives in ``core.poc``, which re-exports these names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields

from gpupool.errors import InvalidInput

P_MISMATCH = 5e-4
FRAUD_THRESHOLD = 1e-7
DEFAULT_R_TARGET = 1.4013564660458173


@dataclass(frozen=True)
class ModelParams:
    """The reference ``Params``: field names and defaults as the delegation API sends them."""

    dim: int = 2048
    n_layers: int = 16
    n_heads: int = 16
    n_kv_heads: int = 16
    vocab_size: int = 8192
    ffn_dim_multiplier: float | None = 1.3
    multiple_of: int = 1024
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    use_scaled_rope: bool = False
    seq_len: int = 16

    def __post_init__(self) -> None:
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "seq_len"):
            if int(getattr(self, name)) < 1:
                raise InvalidInput(f"{name} must be positive", field=f"params.{name}")
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads or self.head_dim % 2:
            raise InvalidInput("dim/n_heads/n_kv_heads do not divide evenly", field="params.n_heads")
        if self.use_scaled_rope:
            raise InvalidInput("use_scaled_rope is not supported", field="params.use_scaled_rope")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden_dim(self) -> int:
        """LLaMA's SwiGLU rule: int(2/3 * 4 dim), times the multiplier, rounded up to ``multiple_of``."""
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ModelParams:
        """Build from a JSON object; unknown keys are ignored as the reference does."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})  # type: ignore[arg-type]


PARAMS_V1 = ModelParams(1024, 32, 32, 32, 8196, 10.0, 2048, 1e-5, 10000.0, False, 128)
PARAMS_V2 = ModelParams(1792, 64, 64, 64, 8196, 10.0, 8192, 1e-5, 10000.0, False, 256)
PARAMS_TEST = ModelParams(128, 16, 16, 16, 128, 16.0, 1024, 1e-5, 500000.0, False, 4)
PARAMS_TINY = ModelParams(32, 2, 4, 2, 64, 1.0, 16, 1e-5, 10000.0, False, 4)


def flops_per_nonce(params: ModelParams) -> int:
    """Matrix-product FLOPs of one nonce's forward pass as the reference computes it (element-wise work
    not counted): q/k/v/o projections, attention scores and values, SwiGLU, the last position's output."""
    s, d, kv = params.seq_len, params.dim, params.n_kv_heads * params.head_dim
    per_layer = 2 * s * d * (2 * d + 2 * kv) + 4 * s * s * d + 6 * s * d * params.ffn_hidden_dim
    return params.n_layers * per_layer + 2 * d * params.vocab_size


PARAMS_V1 = ModelParams(1024, 32, 32, 32, 8196, 10.0, 2048, 1e-5, 10000.0, False, 128)
PARAMS_V2 = ModelParams(1792, 64, 64, 64, 8196, 10.0, 8192, 1e-5, 10000.0, False, 256)
PARAMS_TEST = ModelParams(128, 16, 16, 16, 128, 16.0, 1024, 1e-5, 500000.0, False, 4)
PARAMS_TINY = ModelParams(32, 2, 4, 2, 64, 1.0, 16, 1e-5, 10000.0, False, 4)
# The one table of named sets: rounds, the CLI, the node and the delegation API all read it.
PARAMS_BY_NAME: dict[str, ModelParams] = {
    "v1": PARAMS_V1,
    "v2": PARAMS_V2,
    "test": PARAMS_TEST,
    "tiny": PARAMS_TINY,
}


def params_named(name: str) -> ModelParams:
    try:
        return PARAMS_BY_NAME[name]
    except KeyError:
        raise InvalidInput(
            f"unknown parameter set {name!r}; use one of {sorted(PARAMS_BY_NAME)}", field="params"
        ) from None


def nonce_for(node_id: int, n_nodes: int, group_id: int, n_groups: int, k: int) -> int:
    """The k-th nonce of GPU group ``group_id`` on node ``node_id``; the shards never overlap."""
    if not (0 <= node_id < n_nodes and 0 <= group_id < n_groups and k >= 0):
        raise InvalidInput("need 0 <= node_id < n_nodes, 0 <= group_id < n_groups, k >= 0", field="node_id")
    return node_id + group_id * n_nodes + k * (n_groups * n_nodes)


def nonce_range(node_id: int, n_nodes: int, group_id: int, n_groups: int, k0: int, count: int) -> list[int]:
    first = nonce_for(node_id, n_nodes, group_id, n_groups, k0)
    return list(range(first, first + count * n_groups * n_nodes, n_groups * n_nodes))


def unique_in_order(values: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(int(v) for v in values))


@dataclass(frozen=True)
class Batch:
    """A node's proof for one round: nonces and their claimed distances, in the order computed."""

    public_key: str
    block_hash: str
    block_height: int
    nonces: tuple[int, ...]
    dist: tuple[float, ...]
    node_id: int = 0

    def __post_init__(self) -> None:
        if len(self.nonces) != len(self.dist):
            raise InvalidInput("nonces and dist differ in length", field="dist")

    def __len__(self) -> int:
        return len(self.nonces)

    def _with(self, nonces: Sequence[int], dist: Sequence[float]) -> Batch:
        return Batch(
            self.public_key,
            self.block_hash,
            self.block_height,
            tuple(int(n) for n in nonces),
            tuple(float(d) for d in dist),
            self.node_id,
        )

    def qualifying(self, r_target: float) -> Batch:
        """The sub-batch whose distances are below ``r_target`` (what a node submits)."""
        keep = [i for i, d in enumerate(self.dist) if d < r_target]
        return self._with([self.nonces[i] for i in keep], [self.dist[i] for i in keep])

    def split(self, batch_size: int) -> list[Batch]:
        if batch_size < 1:
            raise InvalidInput("batch_size must be positive", field="batch_size")
        return [
            self._with(self.nonces[i : i + batch_size], self.dist[i : i + batch_size])
            for i in range(0, len(self), batch_size)
        ]

    @staticmethod
    def merge(batches: Sequence[Batch]) -> Batch:
        """Concatenate batches of one round and key; the first batch's ``node_id`` is kept."""
        if not batches:
            raise InvalidInput("nothing to merge", field="batches")
        first = batches[0]
        for b in batches[1:]:
            if (b.public_key, b.block_hash, b.block_height) != (
                first.public_key,
                first.block_hash,
                first.block_height,
            ):
                raise InvalidInput("batches of different rounds or keys cannot merge", field="batches")
        return first._with([n for b in batches for n in b.nonces], [d for b in batches for d in b.dist])

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "nonces": list(self.nonces), "dist": list(self.dist)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Batch:
        try:
            return cls(
                str(data["public_key"]),
                str(data["block_hash"]),
                int(data["block_height"]),  # type: ignore[call-overload]
                tuple(int(n) for n in data["nonces"]),  # type: ignore[attr-defined]
                tuple(float(d) for d in data["dist"]),  # type: ignore[attr-defined]
                int(data.get("node_id", 0)),  # type: ignore[call-overload]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"malformed batch: {exc}", field="batch") from exc
