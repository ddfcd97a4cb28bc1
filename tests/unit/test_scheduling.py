"""Task lifecycle, dispatch planning and settlement arithmetic, as SPEC §3.4 describes them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import FrozenInstanceError, replace
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpupool.core import scheduling as sch
from gpupool.core.scheduling import Outcome, TaskState, TaskView
from gpupool.errors import Conflict, InvalidInput

S = TaskState


def make_task(task_id: str = "t1", **overrides: Any) -> TaskView:
    fields: dict[str, Any] = {
        "price_cap_micro_per_ksec": 1_000,
        "submitted_at": 0.0,
        "timeout_sec": 60.0,
        "max_attempts": 3,
    }
    fields.update(overrides)
    return sch.new_task(task_id, **fields)


def in_state(state: str) -> TaskView:
    queued = make_task()
    assigned = sch.assign(queued, "n1", 10.0)
    running = sch.start(assigned, 11.0)
    return {
        "queued": queued,
        "assigned": assigned,
        "running": running,
        "succeeded": sch.finish(running, 0, 20.0),
        "failed": sch.finish(running, 1, 20.0),
        "stopped": sch.stop(running, 20.0),
        "expired": sch.expire(running, 20.0),
    }[state]


ACTIONS: dict[str, Callable[[TaskView], TaskView]] = {
    "assign": lambda t: sch.assign(t, "n2", 30.0),
    "start": lambda t: sch.start(t, 30.0),
    "finish_ok": lambda t: sch.finish(t, 0, 30.0),
    "finish_err": lambda t: sch.finish(t, 1, 30.0),
    "stop": lambda t: sch.stop(t, 30.0),
    "expire": lambda t: sch.expire(t, 30.0),
    "lose_node": lambda t: sch.lose_node(t, 30.0),
    "dispatch_timeout": lambda t: sch.dispatch_timeout(t, 30.0),
    "node_refused": lambda t: sch.node_refused(t, 30.0),
}

# state → action → resulting state; "same" = returned unchanged; missing = Conflict.
LEGAL: dict[str, dict[str, str]] = {
    "queued": {"assign": "assigned", "stop": "stopped", "expire": "expired"},
    "assigned": {
        "start": "running",
        "finish_ok": "succeeded",
        "finish_err": "failed",
        "stop": "stopped",
        "expire": "expired",
        "lose_node": "queued",
        "dispatch_timeout": "queued",
        "node_refused": "queued",
    },
    "running": {
        "start": "same",
        "finish_ok": "succeeded",
        "finish_err": "failed",
        "stop": "stopped",
        "expire": "expired",
        "lose_node": "queued",
    },
    "succeeded": {"finish_ok": "same"},
    "failed": {"finish_err": "same"},
    "stopped": {"stop": "same"},
    "expired": {"expire": "same"},
}


@pytest.mark.parametrize("state", list(LEGAL))
@pytest.mark.parametrize("action", list(ACTIONS))
def test_every_transition_is_legal_or_a_conflict(state: str, action: str) -> None:
    task = in_state(state)
    expected = LEGAL[state].get(action)
    if expected is None:
        with pytest.raises(Conflict) as info:
            ACTIONS[action](task)
        assert info.value.code == "invalid_task_state"
        assert (info.value.details["task_id"], info.value.details["state"]) == ("t1", state)
        return
    after = ACTIONS[action](task)
    if expected == "same":
        assert after is task
    else:
        assert after.state == TaskState(expected)
    assert sch.problems(after) == []


def test_new_task_is_queued_with_no_attempt_used() -> None:
    task = make_task(priority=2)
    assert (task.state, task.attempts, task.assigned_node, task.priority) == (S.QUEUED, 0, None, 2)
    assert sch.problems(task) == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"price_cap_micro_per_ksec": -1}, "price_cap_micro_per_ksec"),
        ({"price_cap_micro_per_ksec": 1.5}, "price_cap_micro_per_ksec"),
        ({"timeout_sec": 0}, "timeout_sec"),
        ({"timeout_sec": float("inf")}, "timeout_sec"),
    ],
)
def test_new_task_refuses_bad_fields(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        make_task(**overrides)
    assert info.value.details == {"field": field}


def test_assigning_uses_an_attempt_and_records_the_node() -> None:
    task = sch.assign(make_task(), "n1", 10.0)
    assert (task.attempts, task.assigned_node, task.assigned_at) == (1, "n1", 10.0)
    with pytest.raises(InvalidInput):
        sch.assign(make_task(), "", 10.0)


def test_a_lost_node_requeues_until_attempts_run_out_then_fails() -> None:
    task = make_task(max_attempts=2)
    task = sch.lose_node(sch.start(sch.assign(task, "n1", 1.0), 2.0), 3.0)
    assert (task.state, task.attempts, task.assigned_node, task.started_at) == (S.QUEUED, 1, None, None)
    task = sch.lose_node(sch.assign(task, "n2", 4.0), 5.0)
    assert (task.state, task.outcome, task.attempts, task.finished_at) == (
        S.FAILED,
        Outcome.NODE_FAILED,
        2,
        5.0,
    )
    assert task.assigned_node == "n2"
    with pytest.raises(Conflict):
        sch.assign(task, "n3", 6.0)


def test_dispatch_timeout_spends_the_attempt_but_a_refusal_gives_it_back() -> None:
    task = make_task(max_attempts=1)
    refused = sch.node_refused(sch.assign(task, "n1", 1.0), 2.0)
    assert (refused.state, refused.attempts) == (S.QUEUED, 0)
    timed = sch.dispatch_timeout(sch.assign(refused, "n2", 3.0), 4.0)
    assert (timed.state, timed.outcome) == (S.FAILED, Outcome.NODE_FAILED)


def test_reports_from_a_node_that_no_longer_holds_the_task_are_refused() -> None:
    task = sch.assign(make_task(), "n1", 1.0)
    requeued = sch.lose_node(task, 2.0, node_id="n1")
    again = sch.start(sch.assign(requeued, "n2", 3.0), 4.0, node_id="n2")
    stale_reports: list[Callable[[], TaskView]] = [
        lambda: sch.start(again, 5.0, node_id="n1"),
        lambda: sch.finish(again, 0, 5.0, node_id="n1"),
        lambda: sch.node_refused(sch.assign(requeued, "n2", 3.0), 5.0, node_id="n1"),
    ]
    for stale in stale_reports:
        with pytest.raises(Conflict) as info:
            stale()
        assert info.value.code == "not_assigned_node"
    done = sch.finish(again, 0, 6.0, node_id="n2")
    assert sch.finish(done, 0, 7.0, node_id="n2") is done


def test_a_repeated_result_is_a_no_op_and_a_different_one_a_conflict() -> None:
    done = sch.finish(in_state("running"), 0, 20.0)
    assert (done.state, done.exit_code, done.finished_at, done.outcome) == (
        S.SUCCEEDED,
        0,
        20.0,
        Outcome.SUCCEEDED,
    )
    assert sch.finish(done, 0, 99.0) is done
    with pytest.raises(Conflict):
        sch.finish(done, 3, 99.0)
    failed = sch.finish(in_state("running"), 3, 20.0)
    assert (failed.outcome, sch.finish(failed, 3, 30.0)) == (Outcome.TASK_FAILED, failed)
    with pytest.raises(Conflict):
        sch.finish(failed, 4, 30.0)


def test_a_result_without_a_start_counts_as_started_at_the_result() -> None:
    done = sch.finish(in_state("assigned"), 0, 15.0)
    assert (done.state, done.started_at, done.finished_at) == (S.SUCCEEDED, 15.0, 15.0)


def test_a_result_after_a_stop_does_not_change_the_outcome() -> None:
    stopped = in_state("stopped")
    with pytest.raises(Conflict):
        sch.finish(stopped, 0, 25.0)
    assert sch.settlement_outcome(stopped) is Outcome.STOPPED


def test_only_terminal_tasks_can_be_settled() -> None:
    with pytest.raises(Conflict):
        sch.settlement_outcome(in_state("running"))
    assert sch.settlement_outcome(in_state("expired")) is Outcome.EXPIRED


def test_problems_reports_impossible_views() -> None:
    sound = in_state("running")
    assert sch.problems(replace(sound, attempts=4)) != []
    assert sch.problems(replace(sound, started_at=None)) != []
    assert sch.problems(replace(make_task(), assigned_node="n1")) != []
    assert sch.problems(replace(in_state("succeeded"), exit_code=1)) != []
    assert sch.problems(replace(in_state("stopped"), outcome=Outcome.SUCCEEDED)) != []


# --- random event sequences ------------------------------------------------------------------------

EVENTS = ["assign", "start", "finish", "stop", "expire", "lose_node", "dispatch_timeout", "node_refused"]


def apply_event(task: TaskView, event: str, node: str, code: int, now: float) -> TaskView:
    if event == "assign":
        return sch.assign(task, node, now)
    if event == "start":
        return sch.start(task, now, node_id=node)
    if event == "finish":
        return sch.finish(task, code, now, node_id=node)
    if event == "stop":
        return sch.stop(task, now)
    if event == "expire":
        return sch.expire(task, now)
    if event == "lose_node":
        return sch.lose_node(task, now, node_id=node)
    if event == "dispatch_timeout":
        return sch.dispatch_timeout(task, now)
    return sch.node_refused(task, now, node_id=node)


@settings(max_examples=400, deadline=None)
@given(
    max_attempts=st.integers(1, 4),
    events=st.lists(
        st.tuples(st.sampled_from(EVENTS), st.sampled_from(["n1", "n2"]), st.integers(0, 2)), max_size=40
    ),
)
def test_no_event_sequence_reaches_an_impossible_state(
    max_attempts: int, events: list[tuple[str, str, int]]
) -> None:
    task = make_task(max_attempts=max_attempts)
    assigns = refusals = 0
    for step, (event, node, code) in enumerate(events):
        before = task
        try:
            task = apply_event(task, event, node, code, float(step))
        except Conflict:
            continue
        assigns += event == "assign"
        refusals += event == "node_refused"
        assert sch.problems(task) == [], (event, before, task)
        assert task.attempts == assigns - refusals <= max_attempts
        if before.is_terminal:
            assert task is before


# --- decisions -------------------------------------------------------------------------------------


def test_timed_out_counts_from_the_assignment_on_the_hubs_clock_plus_grace() -> None:
    running = in_state("running")  # assigned at 10, started at 11, timeout 60
    assigned = replace(in_state("assigned"), task_id="t2")
    others = [in_state("queued"), in_state("succeeded")]
    assert sch.timed_out([running, assigned, *others], now=70.0) == []
    assert sch.timed_out([running, assigned, *others], now=70.5) == ["t1", "t2"]
    assert sch.timed_out([running], now=80.0, grace_sec=10.0) == []
    assert sch.timed_out([running], now=80.1, grace_sec=10.0) == ["t1"]


def test_a_stop_request_is_kept_once_and_overdue_after_its_grace() -> None:
    running = in_state("running")
    asked = sch.request_stop(running, 30.0)
    assert asked.state is S.RUNNING and asked.stop_requested_at == 30.0
    assert sch.request_stop(asked, 40.0) is asked  # the first request's time counts
    assert sch.problems(asked) == []
    assert sch.stop_overdue([asked, running], now=45.0, grace_sec=15.0) == []
    assert sch.stop_overdue([asked, running], now=45.1, grace_sec=15.0) == ["t1"]
    with pytest.raises(Conflict):
        sch.request_stop(in_state("queued"), 30.0)
    with pytest.raises(Conflict):
        sch.request_stop(in_state("succeeded"), 30.0)


def test_a_node_failure_after_a_stop_request_ends_stopped_not_requeued() -> None:
    asked = sch.request_stop(in_state("running"), 30.0)
    for ended in (
        sch.lose_node(asked, 31.0),
        sch.dispatch_timeout(sch.request_stop(in_state("assigned"), 30.0), 31.0),
    ):
        assert ended.state is S.STOPPED and ended.outcome is Outcome.STOPPED and sch.problems(ended) == []


def test_a_stopped_report_without_a_stop_request_is_a_node_failure() -> None:
    running = in_state("running")  # 3 attempts
    requeued = sch.node_reported(running, "stopped", 0, 20.0, node_id="n1")
    assert requeued.state is S.QUEUED and requeued.attempts == 1 and sch.problems(requeued) == []
    last = replace(running, attempts=3)
    failed = sch.node_reported(last, "stopped", 0, 20.0, node_id="n1")
    assert failed.state is S.FAILED and failed.outcome is Outcome.NODE_FAILED
    asked = sch.request_stop(running, 15.0)
    assert sch.node_reported(asked, "stopped", 0, 20.0, node_id="n1").state is S.STOPPED


def test_an_expired_report_counts_only_once_the_hub_saw_the_whole_timeout() -> None:
    running = in_state("running")  # assigned at 10, timeout 60
    early = sch.node_reported(running, "expired", -1, 69.9, node_id="n1")
    assert early.state is S.QUEUED  # the node gave up early: its failure
    ran_out = sch.node_reported(running, "expired", -1, 70.0, node_id="n1")
    assert ran_out.state is S.EXPIRED and ran_out.outcome is Outcome.EXPIRED


def test_other_reports_are_the_programs_exit_and_a_terminal_task_is_answered_unchanged() -> None:
    running = in_state("running")
    assert sch.node_reported(running, "succeeded", 0, 20.0).state is S.SUCCEEDED
    failed = sch.node_reported(running, "failed", 3, 20.0)
    assert failed.state is S.FAILED and failed.outcome is Outcome.TASK_FAILED and failed.exit_code == 3
    assert sch.node_reported(failed, "stopped", 0, 21.0) is failed
    with pytest.raises(Conflict):
        sch.node_reported(running, "succeeded", 0, 20.0, node_id="n2")
    with pytest.raises(InvalidInput):
        sch.node_reported(running, "succeeded", "0", 20.0)
    with pytest.raises(Conflict):
        sch.node_reported(in_state("queued"), "succeeded", 0, 20.0)


def test_dispatch_overdue_finds_assignments_never_started() -> None:
    assigned = in_state("assigned")  # assigned at 10
    assert sch.dispatch_overdue([assigned, in_state("running")], now=25.0, ack_timeout_sec=15.0) == []
    assert sch.dispatch_overdue([assigned, in_state("running")], now=25.1, ack_timeout_sec=15.0) == ["t1"]


def test_queue_order_is_priority_then_price_then_age_then_id() -> None:
    tasks = [
        make_task("cheap-old", price_cap_micro_per_ksec=1, submitted_at=0.0),
        make_task("rich-new", price_cap_micro_per_ksec=9, submitted_at=5.0),
        make_task("rich-old-b", price_cap_micro_per_ksec=9, submitted_at=1.0),
        make_task("rich-old-a", price_cap_micro_per_ksec=9, submitted_at=1.0),
        make_task("boosted", price_cap_micro_per_ksec=0, submitted_at=9.0, priority=1),
        in_state("running"),
    ]
    order = [t.task_id for t in sch.order_queue(tasks)]
    assert order == ["boosted", "rich-old-a", "rich-old-b", "rich-new", "cheap-old"]
    assert order == [t.task_id for t in sch.order_queue(reversed(tasks))]


def test_plan_dispatch_takes_the_first_ranked_node_with_a_free_slot() -> None:
    queue = [make_task(f"t{i}", submitted_at=float(i)) for i in range(4)]
    ranked = {"t0": ["a", "b"], "t1": ["a", "b"], "t2": ["a", "b"], "t3": ["c"]}
    plan = sch.plan_dispatch(queue, {"a": 1, "b": 1, "c": 0}, lambda t: ranked[t.task_id])
    assert plan == [("t0", "a"), ("t1", "b")]
    assert sch.plan_dispatch(queue, {}, lambda t: ranked[t.task_id]) == []


@settings(max_examples=300, deadline=None)
@given(
    ids=st.lists(st.sampled_from([f"t{i}" for i in range(8)]), max_size=12),
    capacity=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(-1, 3)),
    ranking=st.dictionaries(
        st.sampled_from([f"t{i}" for i in range(8)]), st.lists(st.sampled_from(["a", "b", "c", "d", "x"]))
    ),
    running=st.sets(st.sampled_from([f"t{i}" for i in range(8)])),
)
def test_plan_dispatch_respects_capacity_and_assigns_each_task_once(
    ids: list[str], capacity: dict[str, int], ranking: dict[str, list[str]], running: set[str]
) -> None:
    queue = [in_state("running") if i in running else make_task(i) for i in ids]
    queue = [replace(t, task_id=i) for t, i in zip(queue, ids, strict=True)]
    plan = sch.plan_dispatch(queue, capacity, lambda t: ranking.get(t.task_id, []))
    per_node = Counter(node for _, node in plan)
    assert all(count <= max(capacity.get(node, 0), 0) for node, count in per_node.items())
    planned = [task_id for task_id, _ in plan]
    assert len(planned) == len(set(planned))
    assert not set(planned) & running
    assert all(node in ranking.get(task_id, []) for task_id, node in plan)
    # Greedy is maximal: a queued task left out had every candidate full by the end.
    left = {node: capacity.get(node, 0) - per_node[node] for node in "abcdx"}
    for task_id in set(ids) - set(planned) - running:
        assert all(left[node] <= 0 for node in ranking.get(task_id, []))


# --- settlement ------------------------------------------------------------------------------------


def test_hold_is_price_times_timeout_times_gpus_rounded_up() -> None:
    assert sch.hold_amount(1_000_000, 3600) == 3_600_000
    assert sch.hold_amount(1_000_000, 3600, gpu_count=8) == 28_800_000
    assert sch.hold_amount(1, 1) == 1  # 0.001 micro rounds up
    assert sch.hold_amount(0, 3600) == 0


def test_usage_charge_rounds_down() -> None:
    assert sch.charge_for_usage(1_000_000, 1.5) == 1_500  # price is per kilo-second
    assert sch.charge_for_usage(1, 999.9) == 0
    assert sch.charge_for_usage(3, 0.1) == 0


@pytest.mark.parametrize(
    ("outcome", "pay", "refund"),
    [
        (Outcome.SUCCEEDED, 300, 700),
        (Outcome.TASK_FAILED, 300, 700),
        (Outcome.STOPPED, 300, 700),
        (Outcome.EXPIRED, 300, 700),
        (Outcome.NODE_FAILED, 0, 1_000),
    ],
)
def test_settle_pays_for_work_done_and_nothing_for_a_node_failure(
    outcome: Outcome, pay: int, refund: int
) -> None:
    assert sch.settle(outcome, 1_000, 300) == (pay, refund)


def test_settle_never_pays_more_than_the_hold() -> None:
    assert sch.settle(Outcome.SUCCEEDED, 1_000, 5_000) == (1_000, 0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: sch.hold_amount(-1, 10),
        lambda: sch.hold_amount(1, -10),
        lambda: sch.hold_amount(1, float("nan")),
        lambda: sch.hold_amount(1, 10, gpu_count=0),
        lambda: sch.charge_for_usage(1, -0.5),
        lambda: sch.charge_for_usage(1.5, 1),  # type: ignore[arg-type]
        lambda: sch.settle(Outcome.SUCCEEDED, -1, 0),
        lambda: sch.settle(Outcome.SUCCEEDED, 10, -1),
    ],
)
def test_settlement_arithmetic_refuses_bad_input(call: Callable[[], object]) -> None:
    with pytest.raises(InvalidInput):
        call()


@settings(max_examples=500, deadline=None)
@given(
    outcome=st.sampled_from(list(Outcome)),
    price=st.integers(0, 10**9),
    timeout=st.floats(0.001, 10**6),
    gpus=st.integers(1, 16),
    used=st.floats(0, 2),
)
def test_settlement_conserves_the_hold_and_usage_within_timeout_fits_it(
    outcome: Outcome, price: int, timeout: float, gpus: int, used: float
) -> None:
    hold = sch.hold_amount(price, timeout, gpus)
    gpu_seconds = timeout * gpus * used
    charge = sch.charge_for_usage(price, gpu_seconds)
    pay, refund = sch.settle(outcome, hold, charge)
    assert pay + refund == hold
    assert 0 <= pay <= hold and refund >= 0
    if outcome is Outcome.NODE_FAILED:
        assert pay == 0
    if Fraction(gpu_seconds) <= Fraction(timeout) * gpus:
        assert charge <= hold
        assert outcome is Outcome.NODE_FAILED or pay == charge


@given(hold=st.integers(0, 10**15), charge=st.integers(0, 10**15), outcome=st.sampled_from(list(Outcome)))
def test_pay_plus_refund_is_always_the_hold(hold: int, charge: int, outcome: Outcome) -> None:
    pay, refund = sch.settle(outcome, hold, charge)
    assert pay + refund == hold and pay >= 0 and refund >= 0


@settings(max_examples=200, deadline=None)
@given(
    caps=st.lists(st.integers(1, 5), min_size=1, max_size=30),
    gone=st.sets(st.integers(0, 29)),
    repushed=st.sets(st.integers(0, 29)),
    slots=st.integers(0, 10),
)
def test_dispatch_queue_plans_what_a_full_sort_plans_and_keeps_the_rest(
    caps: list[int], gone: set[int], repushed: set[int], slots: int
) -> None:
    """The heap kept between rounds places the same tasks as sorting the whole queue each round."""
    tasks = {
        f"t{i:02}": make_task(f"t{i:02}", price_cap_micro_per_ksec=c, submitted_at=float(i))
        for i, c in enumerate(caps)
    }
    queue = sch.DispatchQueue()
    for task in tasks.values():
        queue.push(task)
    for i in repushed & set(range(len(caps))):  # pushed twice (requeued): still taken once
        queue.push(tasks[f"t{i:02}"])
    current = {k: (sch.assign(v, "n9", 1.0) if int(k[1:]) in gone else v) for k, v in tasks.items()}

    def anywhere(_task: TaskView) -> list[str]:
        return ["n1"]

    expected = sch.plan_dispatch(sch.order_queue(current.values()), {"n1": slots}, anywhere)
    taken: list[TaskView] = []

    def lazily() -> Iterator[TaskView]:
        for task in queue.take(current):
            taken.append(task)
            yield task

    plan = sch.plan_dispatch(lazily(), {"n1": slots}, anywhere)
    assert plan == expected
    assert len(taken) <= len(plan) + 1  # read no further than the slots needed
    placed = {task_id for task_id, _ in plan}
    for task in taken:
        if task.task_id not in placed:
            queue.push(task)
    waiting = [t for t in sch.order_queue(current.values()) if t.task_id not in placed]
    assert list(queue.take(current)) == waiting  # nothing lost, nothing doubled, still in order


# --- what the mutation probe (bench/mutate_core.py) found untested --------------------------------


def test_a_program_that_ends_on_its_own_after_a_stop_request_is_its_exit_not_a_stop() -> None:
    asked = sch.request_stop(in_state("running"), 15.0)
    done = sch.node_reported(asked, "succeeded", 0, 20.0, node_id="n1")
    assert done.state is S.SUCCEEDED and done.outcome is Outcome.SUCCEEDED


def test_the_integer_bounds_are_inclusive() -> None:
    low = -(2**31)
    assert sch.finish(in_state("running"), low, 20.0).exit_code == low
    assert make_task(priority=low).priority == low
    for bad in ({"priority": low - 1}, {"timeout_sec": 0}, {"timeout_sec": float("inf")}):
        with pytest.raises(InvalidInput):
            make_task(**bad)
    with pytest.raises(InvalidInput):
        sch.finish(in_state("running"), low - 1, 20.0)
    assert (
        make_task().priority == 0
        and sch.new_task("d", price_cap_micro_per_ksec=1, submitted_at=0.0, timeout_sec=1.0).max_attempts == 1
    )


@pytest.mark.parametrize(
    ("view", "problem"),
    [
        (replace(in_state("queued"), finished_at=1.0), "a live task has an end"),
        (replace(in_state("queued"), exit_code=0), "a live task has an end"),
        (replace(in_state("queued"), attempts=3), "a queued task has no attempt left"),
        (replace(in_state("running"), assigned_at=None), "an assigned or running task is not placed"),
        (replace(in_state("assigned"), attempts=0), "an assigned or running task is not placed"),
        (replace(in_state("assigned"), started_at=5.0), "started_at is set exactly when running"),
        (
            replace(in_state("succeeded"), finished_at=None),
            "a terminal task lacks its end or has the wrong outcome",
        ),
        (replace(in_state("succeeded"), exit_code=1), "exit_code does not match the outcome"),
    ],
)
def test_problems_names_each_inconsistency(view: TaskView, problem: str) -> None:
    assert problem in sch.problems(view)


def test_a_live_task_cannot_be_settled() -> None:
    with pytest.raises(Conflict):
        sch.settlement_outcome(in_state("running"))
    with pytest.raises(FrozenInstanceError):
        in_state("running").state = S.QUEUED  # type: ignore[misc]


def test_a_live_task_cannot_be_settled_even_when_an_outcome_is_written_on_it() -> None:
    # A view read back mid-way (outcome recorded, state not yet terminal) must not settle early.
    with pytest.raises(Conflict):
        sch.settlement_outcome(replace(in_state("running"), outcome=Outcome.SUCCEEDED))
    with pytest.raises(Conflict):
        sch.settlement_outcome(replace(in_state("succeeded"), outcome=None))


def test_a_price_cap_fits_a_bigint_column_and_no_more() -> None:
    top = sch.new_task("t1", price_cap_micro_per_ksec=2**63 - 1, submitted_at=0.0, timeout_sec=10.0)
    assert top.price_cap_micro_per_ksec == 2**63 - 1
    with pytest.raises(InvalidInput) as info:
        sch.new_task("t2", price_cap_micro_per_ksec=2**63, submitted_at=0.0, timeout_sec=10.0)
    assert info.value.details["field"] == "price_cap_micro_per_ksec"
