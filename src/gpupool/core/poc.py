"""Proof of compute compatible with Gonka PoC v1 (SPEC §3.6, POC.md): NumPy float32 CPU path.

A round is ``(block_hash, public_key, params)``. Everything random is drawn from NumPy ``default_rng``
generators seeded with ``SeedSequence(entropy)``, the entropy being the sha256 digests of
``f"{seed}_{i}"`` read as little-endian uint32 words, so any two machines agree bit for bit:

- weights: one pool of ``max(50000, int(total_params * 0.05))`` values from ``normal(0, 0.02)``
  (4 digests of ``block_hash``), cast to float32; each parameter takes ``size`` consecutive pool values
  at ``h % (pool - size + 1)`` where ``h`` is the first 8 hex digits of ``sha256(f"{block_hash}_{name}")``;
  a parameter larger than the pool tiles it and is rotated left by ``h % size``. All parameters count,
  the unused ``tok_embeddings.weight`` and the RMSNorm weights included (they are pool values, not ones).
- inputs: ``standard_normal((1, seq_len, dim))`` seeded by ``f"{block_hash}_{public_key}_nonce{nonce}"``;
  the reference hands them to the network as float16, so they are rounded to float16 here too.
- output: last-position logits permuted by ``permutation(vocab)`` seeded by
  ``f"{block_hash}_{public_key}_nonce_{nonce}_permutations"`` (1 digest), L2-normalised in float32;
  ``dist`` = Euclidean distance (float64) to the unit vector drawn from ``f"{block_hash}_target"``.

The network is LLaMA 3.1 (RMSNorm, interleaved-pair RoPE, grouped-query causal attention, SwiGLU),
fed the inputs directly. Weights are rounded to float16 by default, as the reference network holds
them, so the only gap to a GPU result is fp16 arithmetic. Batches, nonce sharding and the validator's
sampled recomputation with its one-sided binomial test close the module.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gpupool.core.poc_batch import (
    DEFAULT_R_TARGET,
    FRAUD_THRESHOLD,
    P_MISMATCH,
    PARAMS_BY_NAME,
    PARAMS_TEST,
    PARAMS_TINY,
    PARAMS_V1,
    PARAMS_V2,
    Batch,
    ModelParams,
    flops_per_nonce,
    nonce_for,
    nonce_range,
    params_named,
    unique_in_order,
)
from gpupool.errors import InvalidInput

__all__ = [  # the data names live in poc_batch; callers may keep importing them from here
    "DEFAULT_R_TARGET",
    "FRAUD_THRESHOLD",
    "PARAMS_BY_NAME",
    "PARAMS_TEST",
    "PARAMS_TINY",
    "PARAMS_V1",
    "PARAMS_V2",
    "P_MISMATCH",
    "Batch",
    "ModelParams",
    "PocModel",
    "compute_distances",
    "flops_per_nonce",
    "nonce_for",
    "nonce_range",
    "params_named",
    "unique_in_order",
    "validate_batch",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

POOL_FRACTION = 0.05
POOL_MIN = 50_000
WEIGHT_STD = 0.02
WEIGHT_HASHES = 4
INPUT_HASHES = 4
PERMUTATION_HASHES = 1
TARGET_HASHES = 1
POOL_CHUNK = 1 << 24


def param_shapes(params: ModelParams) -> list[tuple[str, tuple[int, ...]]]:
    """Parameter names and shapes in the reference module's ``named_parameters()`` order."""
    d, hd, hidden = params.dim, params.head_dim, params.ffn_hidden_dim
    shapes: list[tuple[str, tuple[int, ...]]] = [("tok_embeddings.weight", (params.vocab_size, d))]
    for i in range(params.n_layers):
        p = f"layers.{i}."
        shapes += [
            (p + "attention.wq.weight", (params.n_heads * hd, d)),
            (p + "attention.wk.weight", (params.n_kv_heads * hd, d)),
            (p + "attention.wv.weight", (params.n_kv_heads * hd, d)),
            (p + "attention.wo.weight", (d, params.n_heads * hd)),
            (p + "feed_forward.w1.weight", (hidden, d)),
            (p + "feed_forward.w2.weight", (d, hidden)),
            (p + "feed_forward.w3.weight", (hidden, d)),
            (p + "attention_norm.weight", (d,)),
            (p + "ffn_norm.weight", (d,)),
        ]
    return [*shapes, ("norm.weight", (d,)), ("output.weight", (params.vocab_size, d))]


def count_params(params: ModelParams) -> int:
    return sum(math.prod(shape) for _, shape in param_shapes(params))


def pool_size(params: ModelParams) -> int:
    return max(POOL_MIN, int(count_params(params) * POOL_FRACTION))


def seeded_rng(seed: str, num_hashes: int) -> np.random.Generator:
    """``default_rng(SeedSequence(uint32 words of sha256(f"{seed}_{i}") for i < num_hashes))``."""
    digests = b"".join(hashlib.sha256(f"{seed}_{i}".encode()).digest() for i in range(num_hashes))
    return np.random.default_rng(np.random.SeedSequence(np.frombuffer(digests, dtype="<u4")))


def weight_pool(block_hash: str, size: int, *, chunk: int = POOL_CHUNK) -> F32:
    """The round's weight pool, drawn ``chunk`` values at a time into float32.

    The generator's stream does not depend on how it is cut, so this equals one ``normal(size)`` draw
    cast to float32, without the float64 copy (7 GB for ``v2``'s 890 M values).
    """
    rng = seeded_rng(block_hash, WEIGHT_HASHES)
    out = np.empty(size, dtype=np.float32)
    for start in range(0, size, chunk):
        stop = min(size, start + chunk)
        out[start:stop] = rng.normal(0.0, WEIGHT_STD, size=stop - start)
    return out


def pool_offset(pool_len: int, block_hash: str, name: str, size: int) -> tuple[bool, int]:
    """Where a parameter sits in the pool: ``(True, start)`` for a slice, ``(False, rotation)`` when the
    parameter is larger than the pool and tiles it, rotated left by ``rotation``."""
    name_hash = int(hashlib.sha256(f"{block_hash}_{name}".encode()).hexdigest()[:8], 16)
    if size <= pool_len:
        return True, name_hash % (pool_len - size + 1)
    return False, name_hash % size


def tensor_from_pool(pool: F32, block_hash: str, name: str, shape: tuple[int, ...]) -> F32:
    """One parameter's values: a pool slice (a view), or the tiled pool rotated left, reshaped row-major."""
    size = math.prod(shape)
    is_slice, at = pool_offset(pool.size, block_hash, name, size)
    if is_slice:
        return pool[at : at + size].reshape(shape)
    return np.roll(np.resize(pool, size), -at).reshape(shape)


def target_vector(block_hash: str, vocab: int) -> F64:
    y = seeded_rng(f"{block_hash}_target", TARGET_HASHES).standard_normal((1, vocab))
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return np.asarray(y[0], dtype=np.float64)


def nonce_inputs(block_hash: str, public_key: str, nonces: Sequence[int], params: ModelParams) -> F32:
    """Per-nonce ``seq_len x dim`` normal inputs, rounded through float16 as the reference feeds them."""
    out = np.empty((len(nonces), params.seq_len, params.dim), dtype=np.float32)
    for row, nonce in enumerate(nonces):
        rng = seeded_rng(f"{block_hash}_{public_key}_nonce{nonce}", INPUT_HASHES)
        out[row] = rng.standard_normal((params.seq_len, params.dim)).astype(np.float16)
    return out


def nonce_permutations(
    block_hash: str, public_key: str, nonces: Sequence[int], vocab: int
) -> npt.NDArray[np.int64]:
    rows = [
        seeded_rng(f"{block_hash}_{public_key}_nonce_{n}_permutations", PERMUTATION_HASHES).permutation(vocab)
        for n in nonces
    ]
    return np.asarray(rows, dtype=np.int64).reshape(len(nonces), vocab)


def rope_tables(params: ModelParams) -> tuple[F32, F32]:
    """cos/sin of position * theta^(-2i/head_dim), float32 as the reference precomputes them."""
    hd = params.head_dim
    exponent = np.arange(0, hd, 2, dtype=np.float32)[: hd // 2] / np.float32(hd)
    freqs = np.float32(1.0) / np.power(np.float32(params.rope_theta), exponent, dtype=np.float32)
    angles = np.outer(np.arange(params.seq_len, dtype=np.float32), freqs).astype(np.float32)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def _rms_norm(x: F32, weight: F32, eps: float) -> F32:
    scale = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps))
    return np.asarray((x * scale.astype(np.float32)) * weight, dtype=np.float32)


def _rope(x: F32, cos: F32, sin: F32) -> F32:
    """Rotate interleaved pairs (x[2i], x[2i+1]); x is (batch, seq, heads, head_dim)."""
    even, odd = x[..., 0::2], x[..., 1::2]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = even * c - odd * s
    out[..., 1::2] = odd * c + even * s
    return out


def _silu(x: F32) -> F32:
    return np.asarray(x / (np.float32(1.0) + np.exp(-x)), dtype=np.float32)


@dataclass(frozen=True, eq=False)
class PocModel:
    """The round's network and target, built once per (block_hash, params) and reused per nonce batch."""

    block_hash: str
    params: ModelParams
    pool: F32  # the (fp16-rounded) pool; most weights are views into it
    weights: dict[str, F32]
    target: F64
    rope_cos: F32
    rope_sin: F32

    @classmethod
    def build(cls, block_hash: str, params: ModelParams, *, fp16_weights: bool = True) -> PocModel:
        return _build_cached(block_hash, params, fp16_weights)

    def _attention(self, x: F32, i: int, shape: tuple[int, int], mask: F32) -> F32:
        """Causal grouped-query attention; x is (batch * seq, dim), rows grouped by nonce."""
        p, w = self.params, self.weights
        (b, s), pre = shape, f"layers.{i}.attention."
        q = (x @ w[pre + "wq.weight"].T).reshape(b, s, p.n_heads, p.head_dim)
        k = (x @ w[pre + "wk.weight"].T).reshape(b, s, p.n_kv_heads, p.head_dim)
        v = (x @ w[pre + "wv.weight"].T).reshape(b, s, p.n_kv_heads, p.head_dim)
        q, k = _rope(q, self.rope_cos[:s], self.rope_sin[:s]), _rope(k, self.rope_cos[:s], self.rope_sin[:s])
        rep = p.n_heads // p.n_kv_heads
        if rep > 1:
            k, v = np.repeat(k, rep, axis=2), np.repeat(v, rep, axis=2)
        q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
        scores = (q @ k.transpose(0, 1, 3, 2)) / np.float32(math.sqrt(p.head_dim)) + mask
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        out = (scores @ v).transpose(0, 2, 1, 3).reshape(b * s, p.n_heads * p.head_dim)
        return np.asarray(out @ w[pre + "wo.weight"].T, dtype=np.float32)

    def logits(self, inputs: F32) -> F32:
        """Last-position logits (batch, vocab) of the network for (batch, seq_len, dim) inputs."""
        p, w = self.params, self.weights
        b, s, _ = inputs.shape
        mask = np.triu(np.full((s, s), -np.inf, dtype=np.float32), k=1)
        h = np.ascontiguousarray(inputs, dtype=np.float32).reshape(b * s, p.dim)
        for i in range(p.n_layers):
            pre = f"layers.{i}."
            h = h + self._attention(
                _rms_norm(h, w[pre + "attention_norm.weight"], p.norm_eps), i, (b, s), mask
            )
            x = _rms_norm(h, w[pre + "ffn_norm.weight"], p.norm_eps)
            gate = _silu(x @ w[pre + "feed_forward.w1.weight"].T) * (x @ w[pre + "feed_forward.w3.weight"].T)
            h = np.asarray(h + gate @ w[pre + "feed_forward.w2.weight"].T, dtype=np.float32)
        last = _rms_norm(h.reshape(b, s, p.dim)[:, -1, :], w["norm.weight"], p.norm_eps)
        return np.asarray(last @ w["output.weight"].T, dtype=np.float32)

    def distances(self, public_key: str, nonces: Sequence[int], *, chunk: int = 64) -> F64:
        """``dist`` per nonce, computed ``chunk`` nonces at a time."""
        nonces = [int(n) for n in nonces]
        out = np.empty(len(nonces), dtype=np.float64)
        for start in range(0, len(nonces), chunk):
            part = nonces[start : start + chunk]
            logits = self.logits(nonce_inputs(self.block_hash, public_key, part, self.params))
            perms = nonce_permutations(self.block_hash, public_key, part, self.params.vocab_size)
            out[start : start + len(part)] = logits_to_distances(logits, perms, self.target)
        return out


def logits_to_distances(logits: F32, perms: npt.NDArray[np.int64], target: F64) -> F64:
    """The reference's tail of a batch: permute each row, L2-normalise, distance to the unit target."""
    permuted = np.take_along_axis(np.asarray(logits, dtype=np.float32), perms, axis=1)
    unit = permuted / np.linalg.norm(permuted, axis=1, keepdims=True)
    return np.asarray(np.linalg.norm(unit - target, axis=1), dtype=np.float64)


@functools.lru_cache(maxsize=2)
def _build_cached(block_hash: str, params: ModelParams, fp16_weights: bool) -> PocModel:
    shapes = param_shapes(params)
    pool = weight_pool(block_hash, pool_size(params))
    if fp16_weights:
        pool = pool.astype(np.float16).astype(np.float32)
    weights = {
        name: np.ascontiguousarray(tensor_from_pool(pool, block_hash, name, shape))
        for name, shape in shapes
        if name != "tok_embeddings.weight"
    }
    cos, sin = rope_tables(params)
    target = target_vector(block_hash, params.vocab_size)
    return PocModel(block_hash, params, pool, weights, target, cos, sin)


def compute_distances(block_hash: str, public_key: str, nonces: Sequence[int], params: ModelParams) -> F64:
    """Distances of ``nonces`` for a round; the network is cached per (block_hash, params)."""
    return PocModel.build(block_hash, params).distances(public_key, nonces)


def generate_batch(
    model: PocModel, public_key: str, nonces: Sequence[int], block_height: int, node_id: int
) -> Batch:
    dist = model.distances(public_key, nonces)
    return Batch(
        public_key,
        model.block_hash,
        block_height,
        tuple(int(n) for n in nonces),
        tuple(dist.tolist()),
        node_id,
    )


# --- validation --------------------------------------------------------------------------------------

VALIDATION_SAMPLES = 200
# Claimed vs recomputed distance gap beyond which a nonce counts as invalid even if it still qualifies;
# well above fp16-vs-fp32 noise, well below the ~0.013 between r_target and sqrt(2).
DIST_TOLERANCE = 5e-3


def sample_nonces(
    unique_nonces: Sequence[int], validator_pubkey: str, block_hash: str, block_height: int, n: int = 200
) -> list[int]:
    """The validator's sample: a seeded permutation of the node's unique nonces, first ``n`` taken.

    Seed: the first 8 bytes of ``sha256(f"{validator_pubkey}:{block_hash}:{block_height}")`` as a
    big-endian int64, as the reference; the permutation comes from NumPy's PCG64 (the reference uses
    Go's ``math/rand``, and says the sample need not be reproducible elsewhere).
    """
    if n >= len(unique_nonces):
        return [int(x) for x in unique_nonces]
    digest = hashlib.sha256(f"{validator_pubkey}:{block_hash}:{block_height}".encode()).digest()
    seed = int.from_bytes(digest[:8], "big", signed=True)
    order = np.random.default_rng(seed & 0xFFFF_FFFF_FFFF_FFFF).permutation(len(unique_nonces))[:n]
    return [int(unique_nonces[i]) for i in order]


def binomial_p_value(n_invalid: int, n: int, p: float = P_MISMATCH) -> float:
    """P(X >= n_invalid) for X ~ Binomial(n, p): the one-sided (greater) exact test, summed in log space."""
    if not (0 <= n_invalid <= n) or not 0.0 <= p <= 1.0:
        raise InvalidInput("need 0 <= n_invalid <= n and 0 <= p <= 1", field="n_invalid")
    if n_invalid == 0 or p == 1.0:
        return 1.0
    if p == 0.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    terms = [
        base - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * lp + (n - k) * lq
        for k in range(n_invalid, n + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


@dataclass(frozen=True)
class ValidationResult:
    """What a validator concludes about one node's batch; ``weight`` is 0 when fraud is found."""

    n_sampled: int
    n_invalid: int
    p_value: float
    fraud: bool
    weight: int
    n_duplicates: int = 0
    n_mismatched: int = 0
    n_claimed_nonqualifying: int = 0


def validate_batch(
    batch: Batch,
    recompute: Callable[[str, Sequence[int]], npt.NDArray[np.float64]],
    validator_pubkey: str,
    r_target: float,
    fraud_threshold: float = FRAUD_THRESHOLD,
    *,
    n_samples: int = VALIDATION_SAMPLES,
    p_mismatch: float = P_MISMATCH,
    dist_tolerance: float = DIST_TOLERANCE,
) -> ValidationResult:
    """Recompute a sample of the batch's unique nonces and test the invalid count (SPEC §3.6).

    ``recompute(public_key, nonces)`` is ``PocModel.distances`` of the batch's round. A claimed distance
    that does not qualify is fraud outright (as the reference); a sampled nonce is invalid when its
    recomputed distance exceeds ``r_target`` or differs from the claim by more than ``dist_tolerance``.
    """
    claimed: dict[int, float] = {}
    for nonce, dist in zip(batch.nonces, batch.dist, strict=True):
        claimed.setdefault(int(nonce), float(dist))
    n_dup = len(batch) - len(claimed)
    bad_claims = sum(1 for d in claimed.values() if not d < r_target)
    if bad_claims:
        return ValidationResult(0, 0, 0.0, True, 0, n_dup, 0, bad_claims)
    sample = sample_nonces(list(claimed), validator_pubkey, batch.block_hash, batch.block_height, n_samples)
    if not sample:
        return ValidationResult(0, 0, 1.0, False, 0, n_dup)
    fresh = np.asarray(recompute(batch.public_key, sample), dtype=np.float64)
    claims = np.asarray([claimed[n] for n in sample], dtype=np.float64)
    over = ~(fresh <= r_target)
    mismatched = ~(np.abs(fresh - claims) <= dist_tolerance)
    n_invalid = int(np.count_nonzero(over | mismatched))
    p_value = binomial_p_value(n_invalid, len(sample), p_mismatch)
    fraud = p_value < fraud_threshold
    weight = 0 if fraud else len(claimed)
    return ValidationResult(len(sample), n_invalid, p_value, fraud, weight, n_dup, int(mismatched.sum()))


def judge_sample(
    received: Sequence[float],
    computed: Sequence[float],
    r_target: float,
    fraud_threshold: float = FRAUD_THRESHOLD,
    p_mismatch: float = P_MISMATCH,
) -> tuple[int, float, bool]:
    """``(n_invalid, p_value, fraud)`` of a sample the caller already drew (Gonka's ``ValidatedBatch``).

    A nonce is invalid when its recomputed distance exceeds ``r_target`` or its claim does not qualify;
    the p-value is the same one-sided binomial test as ``validate_batch``'s.
    """
    if len(received) != len(computed):
        raise InvalidInput("received and computed distances differ in length", field="dist")
    pairs = zip(received, computed, strict=True)
    n_invalid = sum(1 for got, fresh in pairs if not (fresh <= r_target and got < r_target))
    p_value = binomial_p_value(n_invalid, len(computed), p_mismatch) if computed else 1.0
    return n_invalid, p_value, p_value < fraud_threshold
