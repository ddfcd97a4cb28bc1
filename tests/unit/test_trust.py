"""The trust rule: failures cost fast, recovery is slow, bounds always hold."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpupool.core import trust


def test_one_failure_takes_thirteen_completed_jobs_to_recover() -> None:
    value, latency = trust.update(trust.INITIAL_TRUST, 100.0, "failed", None)
    assert value == pytest.approx(0.35)
    steps = 0
    while value < trust.INITIAL_TRUST:
        value, latency = trust.update(value, latency, "completed", None)
        steps += 1
    assert steps == 13


def test_rejection_costs_less_than_failure_and_acceptance_gains_little() -> None:
    rejected, _ = trust.update(0.5, 100.0, "rejected", None)
    failed, _ = trust.update(0.5, 100.0, "failed", None)
    accepted, _ = trust.update(0.5, 100.0, "accepted", None)
    completed, _ = trust.update(0.5, 100.0, "completed", None)
    assert failed < rejected < 0.5 < accepted < completed


def test_latency_estimate_converges_and_clamps() -> None:
    latency = 1000.0
    for _ in range(40):
        _, latency = trust.update(0.5, latency, "completed", 200.0)
    assert latency == pytest.approx(200.0, abs=1.0)
    _, after_absurd = trust.update(0.5, 200.0, "completed", 1e12)
    assert after_absurd == pytest.approx(0.8 * 200 + 0.2 * trust.MAX_LATENCY_MS)


def test_unknown_outcome_is_refused() -> None:
    with pytest.raises(ValueError):
        trust.update(0.5, 1.0, "great", None)


@given(st.lists(st.sampled_from(sorted(trust.OUTCOMES)), max_size=200), st.floats(0.05, 1.0))
def test_trust_stays_in_bounds(outcomes: list[str], start: float) -> None:
    value = start
    for outcome in outcomes:
        value, _ = trust.update(value, 100.0, outcome, None)
        assert trust.MIN_TRUST <= value <= trust.MAX_TRUST
