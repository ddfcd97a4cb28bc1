"""Proof of compute (SPEC §3.6): reference agreement, determinism, sharding, batches, validation.

Reference values: distances produced by the Gonka PoC v1 reference itself (``pow.random``,
``pow.random_pool_optimized.initialize_model_with_pool`` with ``pool_fraction=0.05``, the
``pow.models.llama31.Transformer`` forward, and ``Compute._process_batch``'s permute / normalise /
distance), transcribed into a scratch directory and run with torch 2.13.0 (CPU) the way
``ModelWrapper.build`` runs it: model created on the meta device, cast to float16, initialised from the
pool, then evaluated in float32 on the CPU with the reference's float16 inputs.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import binomtest

from gpupool.core.poc import (
    DEFAULT_R_TARGET,
    PARAMS_TEST,
    PARAMS_TINY,
    PARAMS_V1,
    PARAMS_V2,
    Batch,
    ModelParams,
    PocModel,
    binomial_p_value,
    compute_distances,
    count_params,
    generate_batch,
    nonce_for,
    nonce_range,
    param_shapes,
    pool_size,
    sample_nonces,
    target_vector,
    tensor_from_pool,
    validate_batch,
)
from gpupool.errors import InvalidInput

# Expected distances below were computed by the public reference itself (gonka mlnode
# packages/pow/src/pow: models/llama31.py, random_pool_optimized.py, random.py) run on the CPU with the
# torch 2.13.0 CPU build in a scratch venv outside this repo, weights initialised from the block hash
# through its pool and cast like the reference, inputs/permutations/target from its own generators.
HASH_A = "0x5f1a9c3e"
HASH_B = "deadbeef" * 8
REFERENCE = [
    (PARAMS_TINY, HASH_A, "pub_key_1", [0, 3, 17], [1.471735766604, 1.327388113369, 1.388611957339]),
    (PARAMS_TINY, HASH_B, "02abcdef", [5, 123456], [1.475677425456, 1.548196685829]),
    (PARAMS_TEST, HASH_A, "pub_key_1", [0, 3, 17], [1.440629229552, 1.451074247886, 1.531718513568]),
    (PARAMS_TEST, HASH_B, "02abcdef", [5, 123456], [1.400032957628, 1.25240272103]),
]


@pytest.mark.parametrize(("params", "block_hash", "key", "nonces", "expected"), REFERENCE)
def test_distances_match_the_reference_implementation(
    params: ModelParams, block_hash: str, key: str, nonces: list[int], expected: list[float]
) -> None:
    got = PocModel.build(block_hash, params).distances(key, nonces)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_same_round_gives_identical_distances_across_calls_and_processes() -> None:
    nonces = [0, 1, 2, 99]
    first = compute_distances(HASH_A, "pk", nonces, PARAMS_TINY)
    np.testing.assert_array_equal(first, compute_distances(HASH_A, "pk", nonces, PARAMS_TINY))
    code = (
        "import json;from gpupool.core.poc import *;"
        f"print(json.dumps(compute_distances({HASH_A!r}, 'pk', {nonces}, PARAMS_TINY).tolist()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == first.tolist()


def test_distances_do_not_depend_on_chunking_or_batch_neighbours() -> None:
    model = PocModel.build(HASH_B, PARAMS_TINY)
    together = model.distances("pk", list(range(10)), chunk=64)
    one_by_one = np.concatenate([model.distances("pk", [n]) for n in range(10)])
    np.testing.assert_allclose(together, one_by_one, rtol=0, atol=1e-6)


def test_key_hash_and_nonce_each_change_the_distance() -> None:
    base = compute_distances(HASH_A, "pk", [7], PARAMS_TINY)[0]
    assert compute_distances(HASH_A, "other", [7], PARAMS_TINY)[0] != base
    assert compute_distances(HASH_B, "pk", [7], PARAMS_TINY)[0] != base
    assert compute_distances(HASH_A, "pk", [8], PARAMS_TINY)[0] != base


def test_target_is_a_unit_vector_fixed_by_the_block_hash() -> None:
    t = target_vector(HASH_A, 8196)
    assert t.shape == (8196,)
    assert math.isclose(float(np.linalg.norm(t)), 1.0, rel_tol=1e-12)
    np.testing.assert_array_equal(t, target_vector(HASH_A, 8196))
    assert not np.array_equal(t, target_vector(HASH_B, 8196))


def test_distances_lie_between_zero_and_two() -> None:
    d = compute_distances(HASH_A, "pk", range(32), PARAMS_TINY)
    assert np.all((d >= 0) & (d <= 2))


def test_pool_slice_and_tiling_with_rotation() -> None:
    pool = np.arange(10, dtype=np.float32)
    h_small = int(hashlib.sha256(b"h_w").hexdigest()[:8], 16)
    start = h_small % (10 - 6 + 1)
    small = tensor_from_pool(pool, "h", "w", (2, 3))
    np.testing.assert_array_equal(small, np.arange(start, start + 6).reshape(2, 3))
    shift = int(hashlib.sha256(b"h_big").hexdigest()[:8], 16) % 25
    big = tensor_from_pool(pool, "h", "big", (25,))
    assert big.tolist() == [float(((j + shift) % 25) % 10) for j in range(25)]


def test_param_counts_and_shapes_without_allocating() -> None:
    assert count_params(PARAMS_V2) == 17_763_122_944  # ~17.8 B, ~35.5 GB in fp16
    assert count_params(PARAMS_V1) == 2_969_641_984
    assert PARAMS_V2.ffn_hidden_dim == 49152 and PARAMS_V1.ffn_hidden_dim == 28672
    assert PARAMS_TEST.ffn_hidden_dim == 6144
    assert pool_size(PARAMS_V2) == 888_156_147 and pool_size(PARAMS_TINY) == 50_000
    names = [n for n, _ in param_shapes(PARAMS_V2)]
    assert names[0] == "tok_embeddings.weight" and names[-2:] == ["norm.weight", "output.weight"]
    assert len(names) == 64 * 9 + 3
    assert dict(param_shapes(PARAMS_V2))["layers.0.feed_forward.w2.weight"] == (1792, 49152)


def test_params_round_trip_and_reject_bad_shapes() -> None:
    assert ModelParams.from_dict({**PARAMS_V1.to_dict(), "unknown": 1}) == PARAMS_V1
    with pytest.raises(InvalidInput):
        ModelParams(dim=30, n_heads=4)
    with pytest.raises(InvalidInput):
        ModelParams(n_heads=4, n_kv_heads=3, dim=32)
    with pytest.raises(InvalidInput):
        ModelParams(use_scaled_rope=True)


@given(
    st.integers(1, 6),
    st.integers(1, 4),
    st.integers(0, 50),
)
def test_shards_of_all_nodes_and_groups_cover_each_nonce_exactly_once(
    n_nodes: int, n_groups: int, k: int
) -> None:
    seen = [
        nonce_for(node, n_nodes, group, n_groups, step)
        for node in range(n_nodes)
        for group in range(n_groups)
        for step in range(k + 1)
    ]
    assert sorted(seen) == list(range((k + 1) * n_nodes * n_groups))


def test_sharding_formula_and_bounds() -> None:
    assert nonce_for(2, 5, 1, 3, 4) == 2 + 1 * 5 + 4 * 15
    assert nonce_range(1, 2, 0, 1, 0, 4) == [1, 3, 5, 7]
    with pytest.raises(InvalidInput):
        nonce_for(5, 5, 0, 1, 0)
    with pytest.raises(InvalidInput):
        nonce_for(0, 1, 0, 1, -1)


def _batch(nonces: list[int], dist: list[float], key: str = "pk", height: int = 7) -> Batch:
    return Batch(key, HASH_A, height, tuple(nonces), tuple(dist), node_id=3)


def test_batch_split_merge_round_trip_and_qualifying() -> None:
    b = _batch(list(range(7)), [1.3, 1.5, 1.2, 1.41, 1.39, 1.6, 1.0])
    parts = b.split(3)
    assert [len(p) for p in parts] == [3, 3, 1]
    assert Batch.merge(parts) == b
    q = b.qualifying(1.4)
    assert q.nonces == (0, 2, 4, 6) and all(d < 1.4 for d in q.dist)
    assert Batch.from_dict(json.loads(json.dumps(b.to_dict()))) == b


def test_batches_of_different_rounds_or_keys_do_not_merge() -> None:
    with pytest.raises(InvalidInput):
        Batch.merge([_batch([1], [1.0]), _batch([2], [1.0], key="other")])
    with pytest.raises(InvalidInput):
        Batch.merge([_batch([1], [1.0]), _batch([2], [1.0], height=8)])
    with pytest.raises(InvalidInput):
        Batch.merge([])
    with pytest.raises(InvalidInput):
        _batch([1, 2], [1.0])
    with pytest.raises(InvalidInput):
        Batch.from_dict({"public_key": "pk"})


def test_sample_is_deterministic_distinct_and_per_validator() -> None:
    unique = list(range(1000, 3000))
    s1 = sample_nonces(unique, "val1", HASH_A, 10)
    assert s1 == sample_nonces(unique, "val1", HASH_A, 10)
    assert len(s1) == 200 and len(set(s1)) == 200 and set(s1) <= set(unique)
    assert s1 != sample_nonces(unique, "val2", HASH_A, 10)
    assert s1 != sample_nonces(unique, "val1", HASH_A, 11)
    assert sample_nonces([5, 6], "val1", HASH_A, 10) == [5, 6]


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [
        (0, 200, 5e-4),
        (1, 200, 5e-4),
        (3, 200, 5e-4),
        (10, 200, 5e-4),
        (200, 200, 5e-4),
        (30, 100, 0.1),
        (5, 10, 0.5),
        (1, 1, 0.3),
    ],
)
def test_binomial_p_value_matches_scipy(k: int, n: int, p: float) -> None:
    expected = binomtest(k, n, p, alternative="greater").pvalue
    assert math.isclose(binomial_p_value(k, n, p), expected, rel_tol=1e-9, abs_tol=1e-300)


def test_binomial_p_value_edges_and_bad_input() -> None:
    assert binomial_p_value(0, 0) == 1.0
    assert binomial_p_value(1, 5, 0.0) == 0.0
    assert binomial_p_value(5, 5, 1.0) == 1.0
    with pytest.raises(InvalidInput):
        binomial_p_value(3, 2)
    with pytest.raises(InvalidInput):
        binomial_p_value(1, 2, 1.5)


@pytest.fixture(scope="module")
def honest() -> tuple[PocModel, Batch, float]:
    """A node's qualifying batch, with r_target chosen so about a third of 300 nonces qualify."""
    model = PocModel.build(HASH_B, PARAMS_TINY)
    full = generate_batch(model, "node-key", range(300), block_height=42, node_id=1)
    r_target = float(np.quantile(full.dist, 0.33))
    return model, full.qualifying(r_target), r_target


def test_validation_accepts_an_honest_batch(honest: tuple[PocModel, Batch, float]) -> None:
    model, batch, r = honest
    res = validate_batch(batch, model.distances, "validator", r)
    assert (res.n_invalid, res.fraud, res.weight, res.p_value) == (0, False, len(batch), 1.0)
    assert res.n_sampled == min(200, len(batch))


def test_validation_flags_altered_distances(honest: tuple[PocModel, Batch, float]) -> None:
    model, batch, r = honest
    forged = Batch(batch.public_key, batch.block_hash, 42, batch.nonces, tuple(d - 0.05 for d in batch.dist))
    res = validate_batch(forged, model.distances, "validator", r)
    assert res.fraud and res.weight == 0 and res.n_mismatched == res.n_sampled


def test_validation_flags_claimed_nonces_that_do_not_qualify(honest: tuple[PocModel, Batch, float]) -> None:
    model, batch, r = honest
    full = generate_batch(model, "node-key", range(300, 400), block_height=42, node_id=1)
    losers = [n for n, d in zip(full.nonces, full.dist, strict=True) if d >= r][:60]
    lying = Batch.merge(
        [batch, Batch(batch.public_key, batch.block_hash, 42, tuple(losers), (r - 1e-3,) * 60)]
    )
    res = validate_batch(lying, model.distances, "validator", r)
    assert res.fraud and res.weight == 0 and res.n_invalid >= 10
    openly = Batch(batch.public_key, batch.block_hash, 42, (*batch.nonces, 999), (*batch.dist, r + 0.1))
    blunt = validate_batch(openly, model.distances, "validator", r)
    assert blunt.fraud and blunt.n_claimed_nonqualifying == 1


def test_validation_flags_another_keys_nonces(honest: tuple[PocModel, Batch, float]) -> None:
    model, batch, r = honest
    stolen = Batch("thief-key", batch.block_hash, 42, batch.nonces, batch.dist)
    res = validate_batch(stolen, model.distances, "validator", r)
    assert res.fraud and res.weight == 0


def test_validation_counts_duplicates_once(honest: tuple[PocModel, Batch, float]) -> None:
    model, batch, r = honest
    doubled = Batch.merge([batch, batch])
    res = validate_batch(doubled, model.distances, "validator", r)
    assert not res.fraud and res.weight == len(batch) and res.n_duplicates == len(batch)


def test_validation_tolerates_rare_mismatches_but_not_many() -> None:
    claims = list(np.linspace(1.0, 1.3, 400))
    batch = _batch(list(range(400)), claims)

    def recompute_with(n_bad: int):  # type: ignore[no-untyped-def]
        def recompute(key: str, nonces: list[int]) -> np.ndarray:
            out = np.array([claims[n] for n in nonces])
            out[:n_bad] = 1.5
            return out

        return recompute

    assert not validate_batch(batch, recompute_with(1), "v", DEFAULT_R_TARGET).fraud
    assert validate_batch(batch, recompute_with(5), "v", DEFAULT_R_TARGET).fraud


def test_empty_batch_is_not_fraud_and_weighs_nothing() -> None:
    res = validate_batch(_batch([], []), lambda k, n: np.zeros(0), "v", DEFAULT_R_TARGET)
    assert (res.n_sampled, res.fraud, res.weight) == (0, False, 0)


def test_torch_path_in_float32_agrees_with_numpy() -> None:
    pytest.importorskip("torch")
    from gpupool.core.poc_torch import TorchPocModel, torch_available

    assert torch_available()
    model = PocModel.build(HASH_A, PARAMS_TINY)
    torch_model = TorchPocModel(model, device="cpu", dtype="float32")
    np.testing.assert_allclose(
        torch_model.distances("pk", range(20)), model.distances("pk", range(20)), atol=1e-6
    )


def test_the_pool_drawn_in_chunks_equals_one_draw() -> None:
    """v2's pool is drawn in chunks to spare 7 GB; the numbers must not change."""
    from gpupool.core.poc import WEIGHT_STD, seeded_rng, weight_pool

    one = seeded_rng(HASH_A, 4).normal(0.0, WEIGHT_STD, size=100_003).astype(np.float32)
    assert np.array_equal(weight_pool(HASH_A, 100_003, chunk=7_001), one)


@pytest.mark.parametrize("params", [PARAMS_TEST, PARAMS_V1, PARAMS_V2])
def test_flops_per_nonce_counts_every_matrix_product_of_the_forward_pass(params: ModelParams) -> None:
    from gpupool.core.poc import flops_per_nonce

    s, d, v = params.seq_len, params.dim, params.vocab_size
    matrices = sum(math.prod(shape) for name, shape in param_shapes(params) if len(shape) == 2)
    per_position = matrices - 2 * v * d  # embeddings are unused, the output runs on one position
    expected = 2 * s * per_position + params.n_layers * 4 * s * s * d + 2 * d * v
    assert flops_per_nonce(params) == expected
