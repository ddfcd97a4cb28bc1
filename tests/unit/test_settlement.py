"""The money rule of a task's end (core/settlement.py): never more than the hub saw, always balanced."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpupool.core import ledger, scheduling, settlement
from gpupool.core.scheduling import TaskView
from gpupool.core.settlement import Terms
from gpupool.errors import InvalidInput

OWNER = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
USER = "user:alice"


def ended(
    assigned_at: float = 100.0,
    finished_at: float = 600.0,
    timeout_sec: float = 1000.0,
    how: str = "succeeded",
    stop_at: float | None = None,
) -> TaskView:
    task = scheduling.assign(
        scheduling.new_task(
            "t", price_cap_micro_per_ksec=3_000_000, submitted_at=0.0, timeout_sec=timeout_sec
        ),
        "n1",
        assigned_at,
    )
    if stop_at is not None:
        task = scheduling.request_stop(task, stop_at)
    return {
        "succeeded": lambda: scheduling.finish(task, 0, finished_at),
        "failed": lambda: scheduling.finish(task, 3, finished_at),
        "stopped": lambda: scheduling.stop(task, finished_at),
        "expired": lambda: scheduling.expire(task, finished_at),
        "node_failed": lambda: scheduling.lose_node(task, finished_at),
    }[how]()


def terms(**over: object) -> Terms:
    values: dict[str, object] = {
        "account": USER,
        "hold_micro": 3_000_000,
        "price_micro_per_ksec": 2_000_000,
        "units": 1,
        "owner": OWNER,
        "tolerance": settlement.USAGE_TOLERANCE,
        "stop_grace_sec": 0.0,
    }
    values.update(over)
    return Terms(**values)  # type: ignore[arg-type]


def test_an_honest_claim_is_paid_as_claimed_and_the_rest_refunded() -> None:
    done = settlement.settle_task(ended(), terms(), {"gpu_seconds": 500.0, "duration_sec": 500.0})
    assert (done.billable_sec, done.observed_sec, done.charge_micro, done.refund_micro) == (
        500.0,
        500.0,
        1_000_000,
        2_000_000,
    )
    assert done.posting is not None and done.posting.deltas() == {
        "hold:user:alice": -3_000_000,
        OWNER: 1_000_000,
        USER: 2_000_000,
    }  # the fee is 0: no leg to system:fees


def test_an_inflated_claim_is_cut_to_what_the_hub_saw_within_the_tolerance() -> None:
    done = settlement.settle_task(ended(finished_at=100.23), terms(), {"gpu_seconds": 1e6})
    assert done.billable_sec == pytest.approx(0.23 * 1.02)
    assert done.charge_micro == 469  # floor(2 tokens/ksec x 0.2346 s)


def test_the_claim_is_in_units_of_the_task_and_a_cpu_task_counts_its_duration() -> None:
    two = settlement.settle_task(ended(), terms(units=2, hold_micro=6_000_000), {"gpu_seconds": 1000.0})
    assert two.billable_sec == 1000.0  # 2 GPUs x 500 s seen
    cpu = settlement.settle_task(ended(), terms(), {"gpu_seconds": 0.0, "duration_sec": 400.0})
    assert cpu.billable_sec == 400.0
    assert settlement.claimed_seconds(None) == settlement.claimed_seconds({}) == 0.0
    assert settlement.claimed_seconds({"gpu_seconds": float("nan"), "duration_sec": True}) == 0.0


def test_at_the_cap_the_charge_is_the_whole_hold() -> None:
    full = ended(finished_at=5000.0)  # ran past its timeout: observed is the timeout, 1000 s
    done = settlement.settle_task(full, terms(price_micro_per_ksec=3_000_000), {"gpu_seconds": 1000.0})
    assert (done.charge_micro, done.refund_micro) == (3_000_000, 0)
    assert done.posting is not None and done.posting.deltas() == {
        "hold:user:alice": -3_000_000,
        OWNER: 3_000_000,
    }


def test_a_node_failure_or_a_missing_owner_pays_nothing_and_refunds_the_hold() -> None:
    for task, owner in ((ended(how="node_failed"), OWNER), (ended(), None)):
        done = settlement.settle_task(task, terms(owner=owner), {"gpu_seconds": 500.0})
        assert (done.charge_micro, done.refund_micro) == (0, 3_000_000)
        assert done.posting is not None and done.posting.deltas() == {
            "hold:user:alice": -3_000_000,
            USER: 3_000_000,
        }


def test_a_stop_pays_at_most_the_stop_grace_past_the_request() -> None:
    task = ended(finished_at=900.0, how="stopped", stop_at=200.0)
    done = settlement.settle_task(task, terms(stop_grace_sec=15.0), {"gpu_seconds": 800.0})
    assert done.observed_sec == 115.0 and done.billable_sec == pytest.approx(115.0 * 1.02)


def test_an_account_bound_node_is_billed_from_the_hubs_clock_only() -> None:
    done = settlement.settle_task(ended(), terms(bills_from_report=False), {"gpu_seconds": 1e6})
    assert done.billable_sec == 500.0
    silent = settlement.settle_task(ended(), terms(bills_from_report=False), None)
    assert silent.billable_sec == 500.0


def test_nothing_held_makes_no_posting_and_live_tasks_are_not_settled() -> None:
    assert settlement.settle_task(ended(), terms(hold_micro=0), {"gpu_seconds": 5.0}).posting is None
    live = scheduling.assign(
        scheduling.new_task("t", price_cap_micro_per_ksec=1, submitted_at=0.0, timeout_sec=1.0), "n", 0.0
    )
    with pytest.raises(Exception, match="settle"):
        settlement.settle_task(live, terms(), None)
    for units, observed, tolerance in ((0, 1.0, 0.02), (1, -1.0, 0.02), (1, 1.0, -0.01)):
        with pytest.raises(InvalidInput):
            settlement.billable_seconds(1.0, units, observed, tolerance, bills_from_report=True)
    assert settlement.billable_seconds(1.0, 1, 0.0, 0.0, bills_from_report=True) == 0.0


def test_a_task_that_never_ran_was_seen_running_for_no_time() -> None:
    queued = scheduling.new_task("q", price_cap_micro_per_ksec=1, submitted_at=0.0, timeout_sec=10.0)
    assert settlement.observed_seconds(scheduling.stop(queued, 5.0), 15.0) == 0.0  # stopped in the queue
    assigned = scheduling.assign(queued, "n", 1.0)
    assert settlement.observed_seconds(assigned, 15.0) == 0.0  # not finished
    assert settlement.observed_seconds(scheduling.expire(assigned, 0.5), 15.0) == 0.0  # clocks never go back


def test_settlement_terms_and_results_cannot_be_changed_after_the_fact() -> None:
    done = settlement.settle_task(ended(), terms(), {"gpu_seconds": 1.0})
    with pytest.raises(FrozenInstanceError):
        done.charge_micro = 10**9  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        terms().owner = "0x" + "00" * 20  # type: ignore[misc]


@pytest.mark.parametrize(
    ("requirements", "gpus", "units"),
    [
        ({}, 0, 1),
        ({"gpu_count": 1}, 1, 1),
        ({"gpu_count": 2}, 2, 2),
        ({"min_vram_gb": 40}, 1, 1),
        ({"gpu_count": 0, "min_vram_gb": 40}, 1, 1),
        ({"gpu_count": True}, 0, 1),
        ({"gpu_count": "2"}, 0, 1),
    ],
)
def test_gpu_count_and_billing_units(requirements: dict[str, object], gpus: int, units: int) -> None:
    assert settlement.requested_gpus(requirements) == gpus and settlement.billing_units(requirements) == units


def test_the_score_is_of_the_billed_figure() -> None:
    h100 = "NVIDIA H100 80GB HBM3"
    assert settlement.contribution_score(500.0, h100, 1e9, 32) == 500_000
    assert settlement.contribution_score(100.0, None, 1e9, 4) == 800  # 4 cores x 100 s x 0.002
    assert settlement.contribution_score(100.0, None, 50.0, 4) == 100
    assert settlement.contribution_score(100.0, None, -5.0, 4) == 0
    assert settlement.contribution_score(10.0, None, 1e9, 0) == 20  # no cores told: counted as one


seconds = st.floats(0, 1e5, allow_nan=False, allow_infinity=False)
claims = st.one_of(seconds, st.floats(0, 1e12), st.just(float("inf")), st.just(float("nan")))


@settings(max_examples=400, deadline=None)
@given(
    assigned=seconds,
    ran=seconds,
    timeout=st.floats(0.001, 1e5),
    units=st.integers(1, 8),
    price_cap=st.integers(1, 10**9),
    price_share=st.floats(0, 1),
    claim=claims,
    tolerance=st.floats(0, 0.5),
    how=st.sampled_from(["succeeded", "failed", "stopped", "expired", "node_failed"]),
    stop_after=st.one_of(st.none(), seconds),
    grace=st.floats(0, 100),
    owner=st.sampled_from([OWNER, None]),
    from_report=st.booleans(),
)
def test_no_settlement_pays_more_than_the_hub_saw_and_every_one_balances(
    assigned: float,
    ran: float,
    timeout: float,
    units: int,
    price_cap: int,
    price_share: float,
    claim: float,
    tolerance: float,
    how: str,
    stop_after: float | None,
    grace: float,
    owner: str | None,
    from_report: bool,
) -> None:
    price = int(price_cap * price_share)
    hold = scheduling.hold_amount(price_cap, timeout, units)
    stop_at = None if stop_after is None or how == "node_failed" else assigned + stop_after
    task = ended(assigned, assigned + ran, timeout, how, stop_at)
    usage = {"gpu_seconds": claim, "duration_sec": 0.0}
    rule = terms(
        hold_micro=hold,
        price_micro_per_ksec=price,
        units=units,
        owner=owner,
        tolerance=tolerance,
        stop_grace_sec=grace,
        bills_from_report=from_report,
    )
    done = settlement.settle_task(task, rule, usage)
    seen = min(ran, timeout) if stop_at is None else min(ran, timeout, max(0.0, stop_at + grace - assigned))
    assert done.observed_sec == pytest.approx(seen, abs=1e-6)
    ceiling = units * done.observed_sec * ((1 + tolerance) if from_report else 1)
    assert 0 <= done.billable_sec <= ceiling * (1 + 1e-12)
    if from_report and claim == claim:  # not NaN: a claim is never exceeded
        assert done.billable_sec <= claim
    assert 0 <= done.charge_micro <= min(hold, scheduling.charge_for_usage(price, ceiling) + 1)
    assert done.charge_micro + done.refund_micro == hold
    if how == "node_failed" or owner is None:
        assert done.charge_micro == 0
    if done.posting is not None:
        assert sum(done.posting.deltas().values()) == 0
        assert done.posting.deltas()[ledger.hold_account(USER)] == -hold
        assert done.posting.deltas().get(USER, 0) == done.refund_micro
        assert done.posting.deltas().get(owner or "", 0) == done.charge_micro
    else:
        assert hold == 0


@settings(max_examples=200, deadline=None)
@given(ran=seconds, claim=seconds, extra=st.floats(0, 1e4))
def test_a_claim_within_what_the_hub_saw_is_paid_exactly(ran: float, claim: float, extra: float) -> None:
    claim = min(claim, ran)
    done = settlement.settle_task(
        ended(0.0, ran + extra, 1e6), terms(hold_micro=10**12), {"gpu_seconds": claim}
    )
    assert done.billable_sec == claim
    assert done.charge_micro == scheduling.charge_for_usage(2_000_000, claim)


def test_the_stop_request_is_kept_in_the_view() -> None:
    task = ended(how="stopped", stop_at=300.0)
    assert task.stop_requested_at == 300.0 and replace(task, stop_requested_at=None) != task
