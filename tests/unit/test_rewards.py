"""Rewards: scoring by GPU class, exact epoch splits, carry and settle, epoch arithmetic."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpupool.core import rewards, settlement
from gpupool.errors import InvalidInput

OWNERS = [f"0x{i:040x}" for i in range(6)]

owner_ints = st.dictionaries(st.sampled_from(OWNERS), st.integers(0, 10**12), max_size=len(OWNERS))


# --- scoring ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 NVL", "H100"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA GH200 480GB", "GH200"),
        ("NVIDIA B200", "B200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L40", "L40"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada"),
        ("NVIDIA RTX A6000", "RTX A6000"),
        ("Tesla T4", "T4"),
        ("Tesla V100-SXM2-16GB", "V100"),
        ("nvidia h100 80gb hbm3", "H100"),
        ("Some Future GPU X1", "unknown"),
        ("", "unknown"),
    ],
)
def test_gpu_names_map_to_their_family(name: str, family: str) -> None:
    assert rewards.gpu_class(name).family == family


def test_gpu_classes_are_relative_to_h100_and_unknown_is_conservative() -> None:
    assert rewards.gpu_class("NVIDIA H100 80GB HBM3").permille == 1000
    assert rewards.gpu_class("NVIDIA H200").permille > 1000
    assert rewards.gpu_class("NVIDIA A100-SXM4-80GB").permille < 1000
    assert rewards.UNKNOWN_GPU.permille <= min(c.permille for c in rewards.GPU_CLASSES)


def test_gpu_score_is_h100_milliseconds_weighted_by_class() -> None:
    assert rewards.gpu_score(10, "NVIDIA H100 80GB HBM3") == 10_000
    assert rewards.gpu_score(10, "NVIDIA A100-SXM4-80GB") == 3_000
    assert rewards.gpu_score(10, "mystery") == 10 * rewards.UNKNOWN_GPU.permille
    assert rewards.gpu_score(0.0015, "NVIDIA H100 80GB HBM3") == 1  # rounds down, exactly
    assert rewards.gpu_score(0, "NVIDIA H100 80GB HBM3") == 0


def test_cpu_node_earns_a_small_score_and_gpu_time_is_not_counted_twice() -> None:
    assert rewards.cpu_score(1000) == 1000 * rewards.CPU_CORE_PERMILLE
    assert rewards.cpu_score(1000) < rewards.gpu_score(1000, "Tesla T4")
    # A GPU node is scored on its billed GPU-seconds only (core/settlement.contribution_score).
    assert settlement.contribution_score(5, "NVIDIA H100 80GB HBM3", 500, 8) == 5000
    assert settlement.contribution_score(500, None, 500, 8) == rewards.cpu_score(500)


def test_poc_score_uses_the_exchange_rate() -> None:
    assert rewards.poc_score(100) == 100 * rewards.POC_UNITS_PER_VALID_NONCE
    assert rewards.poc_score(100, units_per_nonce=7) == 700
    assert rewards.poc_score(0) == 0


@pytest.mark.parametrize("seconds", [-1, -0.001, float("nan"), float("inf"), True, "5"])
def test_scores_refuse_bad_seconds(seconds: object) -> None:
    with pytest.raises(InvalidInput):
        rewards.gpu_score(seconds, "NVIDIA H100 80GB HBM3")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        rewards.cpu_score(seconds)  # type: ignore[arg-type]


@pytest.mark.parametrize("nonces", [-1, 1.5, True])
def test_poc_score_refuses_bad_counts(nonces: object) -> None:
    with pytest.raises(InvalidInput):
        rewards.poc_score(nonces)  # type: ignore[arg-type]


def test_aggregate_sums_per_owner_and_refuses_negative() -> None:
    rows = [("a", 1), ("b", 2), ("a", 3), ("c", 0)]
    assert rewards.aggregate_scores(rows) == {"a": 4, "b": 2, "c": 0}
    assert rewards.aggregate_scores([]) == {}
    with pytest.raises(InvalidInput):
        rewards.aggregate_scores([("a", 5), ("a", -1)])


# --- distribution ----------------------------------------------------------------------------------


def test_emission_is_split_by_score_and_large_dues_are_paid() -> None:
    dist = rewards.distribute_epoch(1_000_000, {"a": 3, "b": 1}, {}, min_settlement_micro=100)
    assert dist.shares_micro == {"a": 750_000, "b": 250_000}
    assert dist.payouts_micro == {"a": 750_000, "b": 250_000}
    assert dist.carried_micro == {}
    assert dist.unallocated_micro == 0
    dist.check()


def test_leftover_micro_units_go_to_largest_remainders_then_by_owner_key() -> None:
    # 10 / 3 each: 3 + 3 + 3 and one leftover micro, all remainders equal → the smallest key gets it.
    dist = rewards.distribute_epoch(10, {"c": 1, "b": 1, "a": 1}, {}, 0)
    assert dist.shares_micro == {"a": 4, "b": 3, "c": 3}
    # 100 split 1:2:4 → 14.28, 28.57, 57.14: the leftover goes to the .57 remainder.
    dist = rewards.distribute_epoch(100, {"x": 1, "y": 2, "z": 4}, {}, 0)
    assert dist.shares_micro == {"x": 14, "y": 29, "z": 57}


def test_small_dues_are_carried_then_settled_in_a_later_epoch() -> None:
    first = rewards.distribute_epoch(1_000, {"a": 9, "b": 1}, {}, min_settlement_micro=500)
    assert first.payouts_micro == {"a": 900}
    assert first.carried_micro == {"b": 100}
    first.check()
    later = first
    for carried_b in (200, 300, 400):
        later = rewards.distribute_epoch(1_000, {"a": 9, "b": 1}, later.carried_micro, 500)
        later.check()
        assert later.carried_micro == {"b": carried_b}
    later = rewards.distribute_epoch(1_000, {"a": 9, "b": 1}, later.carried_micro, 500)
    assert later.payouts_micro == {"a": 900, "b": 500}
    assert later.carried_micro == {}


def test_an_owner_with_only_a_carried_due_is_paid_when_it_reaches_the_minimum() -> None:
    dist = rewards.distribute_epoch(1_000, {"a": 1}, {"b": 700}, min_settlement_micro=500)
    assert dist.payouts_micro == {"a": 1_000, "b": 700}
    assert dist.shares_micro == {"a": 1_000}


def test_zero_score_epoch_leaves_the_emission_unallocated_and_keeps_carries() -> None:
    dist = rewards.distribute_epoch(5_000, {"a": 0}, {"b": 10}, min_settlement_micro=100)
    assert dist.shares_micro == {}
    assert dist.payouts_micro == {}
    assert dist.carried_micro == {"b": 10}
    assert dist.unallocated_micro == 5_000
    dist.check()
    empty = rewards.distribute_epoch(5_000, {}, {}, 100)
    assert empty.unallocated_micro == 5_000 and not empty.payouts_micro


def test_zero_emission_pays_only_carried_dues() -> None:
    dist = rewards.distribute_epoch(0, {"a": 5}, {"a": 300}, min_settlement_micro=200)
    assert dist.payouts_micro == {"a": 300}
    dist.check()


def test_check_catches_a_distribution_that_loses_a_micro() -> None:
    bad = rewards.EpochDistribution(10, 0, {"a": 10}, {"a": 9}, {}, 0)
    assert not bad.is_conserved()
    with pytest.raises(AssertionError):
        bad.check()


@pytest.mark.parametrize(
    ("emission", "scores", "carried", "minimum", "field"),
    [
        (-1, {"a": 1}, {}, 0, "emission_micro"),
        (1.5, {"a": 1}, {}, 0, "emission_micro"),
        (10, {"a": -1}, {}, 0, "score"),
        (10, {"a": 1.0}, {}, 0, "score"),
        (10, {"a": True}, {}, 0, "score"),
        (10, {"a": 1}, {"a": -5}, 0, "carried_micro"),
        (10, {"a": 1}, {}, -1, "min_settlement_micro"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    emission: int, scores: dict[str, int], carried: dict[str, int], minimum: int, field: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        rewards.distribute_epoch(emission, scores, carried, minimum)
    assert info.value.details == {"field": field}


@settings(max_examples=300, deadline=None)
@given(emission=st.integers(0, 10**15), scores=owner_ints, carried=owner_ints, minimum=st.integers(0, 10**13))
def test_every_micro_unit_is_conserved(
    emission: int, scores: dict[str, int], carried: dict[str, int], minimum: int
) -> None:
    dist = rewards.distribute_epoch(emission, scores, carried, minimum)
    out = sum(dist.payouts_micro.values()) + sum(dist.carried_micro.values()) + dist.unallocated_micro
    assert out == emission + sum(carried.values())
    assert all(v >= minimum and v > 0 for v in dist.payouts_micro.values())
    assert all(0 < v < minimum for v in dist.carried_micro.values())
    assert not dist.payouts_micro.keys() & dist.carried_micro.keys()


@settings(max_examples=300, deadline=None)
@given(emission=st.integers(0, 10**15), scores=owner_ints)
def test_shares_are_proportional_within_one_micro(emission: int, scores: dict[str, int]) -> None:
    dist = rewards.distribute_epoch(emission, scores, {}, 0)
    total = sum(scores.values())
    if total == 0:
        assert dist.unallocated_micro == emission
        return
    assert sum(dist.shares_micro.values()) == emission
    for owner, score in scores.items():
        exact = Fraction(emission * score, total)
        assert abs(dist.shares_micro.get(owner, 0) - exact) < 1


@settings(max_examples=200, deadline=None)
@given(
    emission=st.integers(0, 10**9),
    weights=st.lists(st.integers(0, 10**9), min_size=1, max_size=40).filter(any),
)
def test_the_fast_int64_split_equals_the_exact_bigint_split(emission: int, weights: list[int]) -> None:
    mapping = {f"0x{i:040x}": w for i, w in enumerate(weights)}
    owners = sorted(o for o, w in mapping.items() if w)
    total = sum(weights)
    fast = rewards._split_int64(emission, owners, mapping, total)
    assert fast == rewards._split_bigint(emission, owners, mapping, total)
    assert list(fast) == owners


def test_huge_emissions_and_scores_beyond_int64_are_split_exactly() -> None:
    scores = {"a": 3 * 10**18, "b": 10**18, "c": 1}
    emission = 10**18 + 1
    dist = rewards.distribute_epoch(emission, scores, {}, 0)
    assert sum(dist.shares_micro.values()) == emission
    for owner, score in scores.items():
        assert abs(dist.shares_micro[owner] - Fraction(emission * score, sum(scores.values()))) < 1
    dist.check()


@settings(max_examples=200, deadline=None)
@given(emission=st.integers(0, 10**12), scores=owner_ints, carried=owner_ints, seed=st.integers())
def test_same_input_in_any_order_gives_the_same_result(
    emission: int, scores: dict[str, int], carried: dict[str, int], seed: int
) -> None:
    def shuffled(d: dict[str, int]) -> dict[str, int]:
        items = list(d.items())
        random.Random(seed).shuffle(items)
        return dict(items)

    a = rewards.distribute_epoch(emission, scores, carried, 1000)
    b = rewards.distribute_epoch(emission, shuffled(scores), shuffled(carried), 1000)
    assert a == b
    assert list(a.payouts_micro) == list(b.payouts_micro)


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(OWNERS), st.integers(0, 10**9)), max_size=50))
def test_aggregate_equals_the_per_owner_sum_whatever_the_order(rows: list[tuple[str, int]]) -> None:
    totals = rewards.aggregate_scores(rows)
    assert totals == rewards.aggregate_scores(reversed(rows))
    for owner in OWNERS:
        assert totals.get(owner, 0) == sum(s for o, s in rows if o == owner)


# --- epochs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "epoch"),
    [(0, 0), (299.999, 0), (300, 1), (301, 1), (3000, 10)],
)
def test_epoch_of_uses_half_open_bounds(ts: float, epoch: int) -> None:
    assert rewards.epoch_of(ts, 300) == epoch


def test_epoch_bounds_and_genesis() -> None:
    assert rewards.epoch_bounds(0, 300) == (0, 300)
    assert rewards.epoch_bounds(2, 300, genesis=1000.0) == (1600.0, 1900.0)
    assert rewards.epoch_of(1600.0, 300, genesis=1000.0) == 2
    assert rewards.epoch_of(1599.9, 300, genesis=1000.0) == 1


@pytest.mark.parametrize(
    ("ts", "epoch_sec", "genesis"),
    [(-1.0, 300, 0.0), (10.0, 0, 0.0), (10.0, -300, 0.0), (float("nan"), 300, 0.0), (5.0, 300, 10.0)],
)
def test_epoch_of_refuses_bad_input(ts: float, epoch_sec: int, genesis: float) -> None:
    with pytest.raises(InvalidInput):
        rewards.epoch_of(ts, epoch_sec, genesis)


def test_epoch_bounds_refuses_negative_epoch() -> None:
    with pytest.raises(InvalidInput):
        rewards.epoch_bounds(-1, 300)


@pytest.mark.parametrize(
    ("ts", "epoch_sec", "genesis"),
    [
        (2155545296.075306, 78893, 1965570952.0753062),  # float division lands one epoch early
        (267360446.20730343, 54413, 99713993.20730345),  # float division lands one epoch late
    ],
)
def test_epoch_of_agrees_with_epoch_bounds_where_float_division_does_not(
    ts: float, epoch_sec: int, genesis: float
) -> None:
    epoch = rewards.epoch_of(ts, epoch_sec, genesis)
    start, end = rewards.epoch_bounds(epoch, epoch_sec, genesis)
    assert start <= ts < end


@settings(max_examples=500, deadline=None)
@given(
    ts=st.floats(0, 4e9, allow_nan=False),
    epoch_sec=st.integers(1, 86_400),
    genesis=st.floats(0, 2e9, allow_nan=False),
)
def test_every_timestamp_falls_inside_its_epoch(ts: float, epoch_sec: int, genesis: float) -> None:
    ts = genesis + ts
    epoch = rewards.epoch_of(ts, epoch_sec, genesis)
    start, end = rewards.epoch_bounds(epoch, epoch_sec, genesis)
    assert start <= ts < end
