"""The trust rule: failures cost fast, recovery is slow, bounds always hold."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpupool.core import trust
from gpupool.errors import InvalidInput


def test_one_failure_takes_thirteen_completed_jobs_to_recover() -> None:
    value, latency = trust.update(trust.INITIAL_TRUST, 100.0, "failed", None)
    assert value == pytest.approx(0.35)
    steps = 0
    while value < trust.INITIAL_TRUST:
        value, latency = trust.update(value, latency, "completed", None)
        steps += 1
    assert steps == trust.RECOVERY_AFTER_FAILURE == 13


def test_rejection_costs_less_than_failure_and_acceptance_gains_less_than_completion() -> None:
    rejected, _ = trust.update(0.5, 100.0, "rejected", None)
    failed, _ = trust.update(0.5, 100.0, "failed", None)
    accepted, _ = trust.update(0.5, 100.0, "accepted", None)
    completed, _ = trust.update(0.5, 100.0, "completed", None)
    assert failed < rejected < 0.5 < accepted < completed


def test_a_node_failing_one_job_in_ten_stays_well_below_a_reliable_one() -> None:
    flaky = reliable = trust.INITIAL_TRUST
    for i in range(1000):
        flaky, _ = trust.update(flaky, 100.0, "failed" if i % 10 == 9 else "completed", None)
        reliable, _ = trust.update(reliable, 100.0, "completed", None)
    assert 0.27 <= flaky <= 0.4  # just after a failure: ~0.28
    assert reliable > 0.99


def test_trust_never_drops_below_the_floor_or_rises_above_one() -> None:
    value = 1.0
    for _ in range(100):
        value, _ = trust.update(value, 100.0, "failed", None)
    assert value == trust.MIN_TRUST
    for _ in range(2000):
        value, _ = trust.update(value, 100.0, "completed", None)
    assert value <= trust.MAX_TRUST


def test_latency_estimate_converges_and_ignores_missing_observations() -> None:
    latency = trust.INITIAL_LATENCY_MS
    for _ in range(40):
        _, latency = trust.update(0.5, latency, "completed", 200.0)
    assert latency == pytest.approx(200.0, abs=1.0)
    assert trust.update(0.5, latency, "failed", None)[1] == latency


def test_absurd_latency_reports_are_clamped() -> None:
    _, after_huge = trust.update(0.5, 200.0, "completed", 1e12)
    assert after_huge == pytest.approx(0.8 * 200 + 0.2 * trust.MAX_LATENCY_MS)
    _, after_negative = trust.update(0.5, 200.0, "completed", -5.0)
    assert after_negative == pytest.approx(0.8 * 200 + 0.2 * trust.MIN_LATENCY_MS)


@pytest.mark.parametrize(
    ("outcome", "value", "latency", "observed"),
    [
        ("great", 0.5, 100.0, None),
        ("", 0.5, 100.0, None),
        ("completed", math.nan, 100.0, None),
        ("completed", 0.5, math.inf, None),
        ("completed", 0.5, 100.0, math.nan),
    ],
)
def test_bad_input_is_refused(outcome: str, value: float, latency: float, observed: float | None) -> None:
    with pytest.raises(InvalidInput):
        trust.update(value, latency, outcome, observed)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(trust.OUTCOMES)),
            st.none() | st.floats(-1e9, 1e15, allow_nan=False),
        ),
        max_size=200,
    ),
    st.floats(trust.MIN_TRUST, trust.MAX_TRUST),
)
def test_trust_and_latency_stay_in_bounds_under_any_sequence(
    events: list[tuple[str, float | None]], start: float
) -> None:
    value, latency = start, trust.INITIAL_LATENCY_MS
    for outcome, observed in events:
        value, latency = trust.update(value, latency, outcome, observed)
        assert trust.MIN_TRUST <= value <= trust.MAX_TRUST
        assert trust.MIN_LATENCY_MS <= latency <= trust.MAX_LATENCY_MS
