"""Task lifecycle, dispatch planning and escrow settlement arithmetic — pure, with time as a parameter.

States (SPEC §3.4)::

    queued ──assign──▶ assigned ──start──▶ running ──finish──▶ succeeded | failed
      ▲                  │  │                 │
      └─ node_refused ───┘  │                 ├──────── stop ──▶ stopped      (also from queued/assigned)
      └─ lose_node / dispatch_timeout ◀───────┤
           (attempts left; else failed)       └──────── expire ▶ expired      (also from queued/assigned)

An attempt is counted when a task is assigned; a node that explicitly refuses gives the attempt back
(it ran nothing), a node that is lost or never acknowledges keeps it. So a queued task always has an
attempt left, and ``attempts <= max_attempts`` holds in every state. Terminal states are absorbing;
repeating the transition that ended a task returns it unchanged, so a re-sent result or stop is
harmless and settlement above this module can happen exactly once.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from gpupool.core import exact
from gpupool.errors import Conflict, InvalidInput


class TaskState(StrEnum):
    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    EXPIRED = "expired"


TERMINAL_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.STOPPED, TaskState.EXPIRED})
LIVE_STATES = frozenset({TaskState.QUEUED, TaskState.ASSIGNED, TaskState.RUNNING})


class Outcome(StrEnum):
    """Why a task ended; decides who pays (see ``settle``)."""

    SUCCEEDED = "succeeded"  # exit code 0
    TASK_FAILED = "task_failed"  # the user's program exited non-zero: the node did the work
    NODE_FAILED = "node_failed"  # the last attempt was lost with its node: the node did not deliver
    STOPPED = "stopped"  # the user stopped it
    EXPIRED = "expired"  # it ran past its timeout (or waited past it)


@dataclass(frozen=True, slots=True)
class TaskView:
    """What scheduling decisions need to know about a task; every transition returns a new one."""

    task_id: str
    state: TaskState
    attempts: int
    max_attempts: int
    price_cap_micro_per_ksec: int
    submitted_at: float
    timeout_sec: float
    priority: int = 0
    assigned_node: str | None = None  # kept on terminal states: who ran the last attempt
    assigned_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    outcome: Outcome | None = None
    stop_requested_at: float | None = None  # the user asked the node to stop it (hub's clock)

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


def new_task(
    task_id: str,
    *,
    price_cap_micro_per_ksec: int,
    submitted_at: float,
    timeout_sec: float,
    max_attempts: int = 1,
    priority: int = 0,
) -> TaskView:
    """A freshly submitted task, queued with no attempt used."""
    if not task_id:
        raise InvalidInput("task_id must not be empty", field="task_id")
    _check_int(price_cap_micro_per_ksec, "price_cap_micro_per_ksec", minimum=0)
    _check_int(max_attempts, "max_attempts", minimum=1)
    _check_int(priority, "priority", minimum=-(2**31))
    if not (isinstance(timeout_sec, int | float) and math.isfinite(timeout_sec) and timeout_sec > 0):
        raise InvalidInput("timeout_sec must be a positive number", field="timeout_sec")
    return TaskView(
        task_id,
        TaskState.QUEUED,
        0,
        max_attempts,
        price_cap_micro_per_ksec,
        submitted_at,
        timeout_sec,
        priority,
    )


# --- transitions -----------------------------------------------------------------------------------


def _refuse(task: TaskView, action: str) -> Conflict:
    return Conflict(
        f"{action} is not allowed for task {task.task_id} in state {task.state}",
        code="invalid_task_state",
        details={"task_id": task.task_id, "state": str(task.state), "action": action},
    )


def _require(task: TaskView, action: str, *states: TaskState) -> None:
    if task.state not in states:
        raise _refuse(task, action)


def _check_node(task: TaskView, node_id: str | None, action: str) -> None:
    """A report from a node that no longer holds the task (a stale earlier attempt) is refused."""
    if node_id is not None and node_id != task.assigned_node:
        raise Conflict(
            f"node {node_id} does not hold task {task.task_id}",
            code="not_assigned_node",
            details={"task_id": task.task_id, "node_id": node_id, "action": action},
        )


def _end(
    task: TaskView, state: TaskState, outcome: Outcome, now: float, exit_code: int | None = None
) -> TaskView:
    return replace(task, state=state, outcome=outcome, finished_at=now, exit_code=exit_code)


def _requeue_or_fail(task: TaskView, now: float) -> TaskView:
    """The attempt failed with its node: stopped if the user asked for that, else retried or failed."""
    if task.stop_requested_at is not None:
        return _end(task, TaskState.STOPPED, Outcome.STOPPED, now)
    if task.attempts < task.max_attempts:
        return replace(task, state=TaskState.QUEUED, assigned_node=None, assigned_at=None, started_at=None)
    return _end(task, TaskState.FAILED, Outcome.NODE_FAILED, now)


def assign(task: TaskView, node_id: str, now: float) -> TaskView:
    """Hand a queued task to a node; this uses one attempt."""
    _require(task, "assign", TaskState.QUEUED)
    if not node_id:
        raise InvalidInput("node_id must not be empty", field="node_id")
    return replace(
        task, state=TaskState.ASSIGNED, attempts=task.attempts + 1, assigned_node=node_id, assigned_at=now
    )


def start(task: TaskView, now: float, *, node_id: str | None = None) -> TaskView:
    """The node acknowledged and began running the task (a repeated start is a no-op)."""
    if task.state is TaskState.RUNNING:
        _check_node(task, node_id, "start")
        return task
    _require(task, "start", TaskState.ASSIGNED)
    _check_node(task, node_id, "start")
    return replace(task, state=TaskState.RUNNING, started_at=now)


def finish(task: TaskView, exit_code: int, now: float, *, node_id: str | None = None) -> TaskView:
    """The node reported a result: exit code 0 succeeds, anything else fails without retry.

    A result may arrive without a start (a task quicker than the acknowledgement). The same result
    sent again returns the task unchanged; a different result for a finished task is a Conflict.
    """
    _check_int(exit_code, "exit_code", minimum=-(2**31), maximum=2**31 - 1)  # an int4 column
    state, outcome = (
        (TaskState.SUCCEEDED, Outcome.SUCCEEDED)
        if exit_code == 0
        else (TaskState.FAILED, Outcome.TASK_FAILED)
    )
    if task.is_terminal:
        if task.outcome is outcome and task.exit_code == exit_code:
            _check_node(task, node_id, "finish")
            return task
        raise _refuse(task, "finish")
    _require(task, "finish", TaskState.ASSIGNED, TaskState.RUNNING)
    _check_node(task, node_id, "finish")
    started = task.started_at if task.started_at is not None else now
    return replace(_end(task, state, outcome, now, exit_code), started_at=started)


def stop(task: TaskView, now: float) -> TaskView:
    """The user stopped the task; stopping a stopped task is a no-op, a finished one a Conflict."""
    if task.state is TaskState.STOPPED:
        return task
    _require(task, "stop", *LIVE_STATES)
    return _end(task, TaskState.STOPPED, Outcome.STOPPED, now)


def request_stop(task: TaskView, now: float) -> TaskView:
    """The user asked the node running the task to stop it; the first request's time is kept.

    The task stays live until the node reports, or until the hub's stop grace runs out
    (``stop_overdue``): only a stop the hub asked for makes a node's ``stopped`` a paid end.
    """
    _require(task, "request_stop", TaskState.ASSIGNED, TaskState.RUNNING)
    if task.stop_requested_at is not None:
        return task
    return replace(task, stop_requested_at=now)


def node_reported(
    task: TaskView, status: str, exit_code: object, now: float, *, node_id: str | None = None
) -> TaskView:
    """How a node's result ends the task, judged by what the hub itself caused and saw.

    ``stopped`` is an end only when the user asked for a stop, ``expired`` only when the hub saw the
    attempt run its whole timeout (``assigned_at + timeout_sec``); otherwise the node ended the task on
    its own: a node failure, retried while attempts are left, never paid. Any other status is the
    program's exit (``finish``).
    """
    if task.is_terminal:
        return task  # a result re-sent after the end: answered with how the task ended
    _require(task, "report", TaskState.ASSIGNED, TaskState.RUNNING)
    _check_node(task, node_id, "report")
    if status == "stopped" and task.stop_requested_at is not None:
        return stop(task, now)
    ran_out = task.assigned_at is not None and now - task.assigned_at >= task.timeout_sec
    if status == "expired" and ran_out:
        return expire(task, now)
    if status in ("stopped", "expired"):
        return _requeue_or_fail(task, now)
    return finish(task, exit_code, now, node_id=node_id)  # type: ignore[arg-type]


def expire(task: TaskView, now: float) -> TaskView:
    """The task ran (or waited) past its timeout; expiring it again is a no-op."""
    if task.state is TaskState.EXPIRED:
        return task
    _require(task, "expire", *LIVE_STATES)
    return _end(task, TaskState.EXPIRED, Outcome.EXPIRED, now)


def lose_node(task: TaskView, now: float, *, node_id: str | None = None) -> TaskView:
    """The task's node went offline: back to the queue if an attempt is left, else failed."""
    _require(task, "lose_node", TaskState.ASSIGNED, TaskState.RUNNING)
    _check_node(task, node_id, "lose_node")
    return _requeue_or_fail(task, now)


def dispatch_timeout(task: TaskView, now: float) -> TaskView:
    """The node never acknowledged the assignment: treated like a lost node (the attempt is spent)."""
    _require(task, "dispatch_timeout", TaskState.ASSIGNED)
    return _requeue_or_fail(task, now)


def node_refused(task: TaskView, now: float, *, node_id: str | None = None) -> TaskView:
    """The node declined the assignment before running anything: back to the queue, attempt returned."""
    _require(task, "node_refused", TaskState.ASSIGNED)
    _check_node(task, node_id, "node_refused")
    return replace(
        task, state=TaskState.QUEUED, attempts=task.attempts - 1, assigned_node=None, assigned_at=None
    )


# --- consistency -----------------------------------------------------------------------------------


def _live_problems(task: TaskView) -> list[str]:
    problems = []
    if task.finished_at is not None or task.outcome is not None or task.exit_code is not None:
        problems.append("a live task has an end")
    placed = task.assigned_node is not None and task.assigned_at is not None
    if task.state is TaskState.QUEUED and (task.assigned_node or task.started_at is not None):
        problems.append("a queued task is placed")
    if task.state is TaskState.QUEUED and task.attempts >= task.max_attempts:
        problems.append("a queued task has no attempt left")
    if task.state is TaskState.QUEUED and task.stop_requested_at is not None:
        problems.append("a queued task has a stop request")
    if task.state is not TaskState.QUEUED and (not placed or task.attempts < 1):
        problems.append("an assigned or running task is not placed")
    if (task.state is TaskState.RUNNING) != (task.started_at is not None):
        problems.append("started_at is set exactly when running")
    return problems


_OUTCOMES = {
    TaskState.SUCCEEDED: {Outcome.SUCCEEDED},
    TaskState.FAILED: {Outcome.TASK_FAILED, Outcome.NODE_FAILED},
    TaskState.STOPPED: {Outcome.STOPPED},
    TaskState.EXPIRED: {Outcome.EXPIRED},
}


def _terminal_problems(task: TaskView) -> list[str]:
    problems = []
    if task.finished_at is None or task.outcome not in _OUTCOMES[task.state]:
        problems.append("a terminal task lacks its end or has the wrong outcome")
    with_code = task.outcome in (Outcome.SUCCEEDED, Outcome.TASK_FAILED)
    if with_code != (task.exit_code is not None) or (task.outcome is Outcome.SUCCEEDED) != (
        task.exit_code == 0
    ):
        problems.append("exit_code does not match the outcome")
    if task.outcome is Outcome.NODE_FAILED and task.attempts != task.max_attempts:
        problems.append("failed for lost nodes with attempts left")
    return problems


def problems(task: TaskView) -> list[str]:
    """Everything inconsistent about a view (empty when sound); a guard for stores and tests."""
    found = [] if 0 <= task.attempts <= task.max_attempts else ["attempts out of range"]
    return found + (_terminal_problems(task) if task.is_terminal else _live_problems(task))


# --- decisions given `now` -------------------------------------------------------------------------


def timed_out(tasks: Iterable[TaskView], now: float, grace_sec: float = 0.0) -> list[str]:
    """Placed tasks past their timeout plus ``grace_sec``, counted on the hub's clock from assignment.

    From the assignment, not from a start the node reports: the hub never waits on a node's word
    to end what it holds in escrow.
    """
    return [
        t.task_id
        for t in tasks
        if t.state in (TaskState.ASSIGNED, TaskState.RUNNING)
        and t.assigned_at is not None
        and now - t.assigned_at > t.timeout_sec + grace_sec
    ]


def dispatch_overdue(tasks: Iterable[TaskView], now: float, ack_timeout_sec: float) -> list[str]:
    """Assigned tasks whose node has not started them within ``ack_timeout_sec``."""
    return [
        t.task_id
        for t in tasks
        if t.state is TaskState.ASSIGNED
        and t.assigned_at is not None
        and now - t.assigned_at > ack_timeout_sec
    ]


def stop_overdue(tasks: Iterable[TaskView], now: float, grace_sec: float) -> list[str]:
    """Live tasks whose stop was asked for more than ``grace_sec`` ago: the hub ends them itself."""
    return [
        t.task_id
        for t in tasks
        if t.state in (TaskState.ASSIGNED, TaskState.RUNNING)
        and t.stop_requested_at is not None
        and now - t.stop_requested_at > grace_sec
    ]


def _queue_key(task: TaskView) -> tuple[int, int, float, str]:
    return (-task.priority, -task.price_cap_micro_per_ksec, task.submitted_at, task.task_id)


def order_queue(tasks: Iterable[TaskView]) -> list[TaskView]:
    """Queued tasks in dispatch order: explicit priority, then higher price cap, older, smaller id."""
    return sorted((t for t in tasks if t.state is TaskState.QUEUED), key=_queue_key)


class DispatchQueue:
    """Queued tasks in dispatch order, kept as a heap between rounds.

    A round pops as many tasks as it can place, so it costs what it takes, not the length of a queue
    of thousands. Entries go stale when a task leaves the queue; ``take`` drops those as it meets them.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[tuple[int, int, float, str], str]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, task: TaskView) -> None:
        heapq.heappush(self._heap, (_queue_key(task), task.task_id))

    def take(self, current: Mapping[str, TaskView]) -> Iterator[TaskView]:
        """Pop the queued tasks of ``current`` in order; the caller pushes back those it did not place."""
        seen: set[str] = set()
        while self._heap:
            key, task_id = heapq.heappop(self._heap)
            task = current.get(task_id)
            if (
                task is None
                or task.state is not TaskState.QUEUED
                or task_id in seen
                or _queue_key(task) != key
            ):
                continue
            seen.add(task_id)
            yield task


def plan_dispatch(
    queue: Iterable[TaskView],
    capacity: Mapping[str, int],
    choose: Callable[[TaskView], list[str]],
) -> list[tuple[str, str]]:
    """Pair queued tasks with nodes: each takes the first of its ranked candidates with a free slot.

    ``queue`` is taken in the order given (``order_queue`` or a ``DispatchQueue`` gives dispatch
    order) and only as far as there are free slots, so a lazy queue is read no further than needed.
    ``capacity`` is each node's free slots (max_parallel - running); a node missing from it, or with no
    slot left, is skipped. No node gets more tasks than its slots and no task is planned twice.
    """
    free = {node: slots for node, slots in capacity.items() if slots > 0}
    plan: list[tuple[str, str]] = []
    planned: set[str] = set()
    for task in queue:
        if not free:
            break
        if task.state is not TaskState.QUEUED or task.task_id in planned:
            continue
        node = next((n for n in choose(task) if free.get(n, 0) > 0), None)
        if node is None:
            continue
        plan.append((task.task_id, node))
        planned.add(task.task_id)
        free[node] -= 1
        if not free[node]:
            del free[node]
    return plan


# --- settlement arithmetic -------------------------------------------------------------------------


def _check_int(value: int, field: str, minimum: int, maximum: int = 2**63 - 1) -> int:
    """A true integer (a bool is not one) that fits its column: BIGINT unless ``maximum`` says less."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidInput(f"{field} must be an integer from {minimum} to {maximum}", field=field)
    return value


def _check_seconds(value: float, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidInput(f"{field} must be a finite, non-negative number of seconds", field=field)
    return value


@functools.lru_cache(maxsize=4096, typed=True)  # a sweep submits the same terms many times
def hold_amount(price_micro_per_ksec: int, timeout_sec: float, gpu_count: int = 1) -> int:
    """Escrow for a task: price cap x timeout x GPUs, rounded *up* so it covers any charge.

    A CPU-only task is priced as one unit (``gpu_count=1``).
    """
    _check_int(price_micro_per_ksec, "price_micro_per_ksec", minimum=0)
    _check_int(gpu_count, "gpu_count", minimum=1)
    seconds = _check_seconds(timeout_sec, "timeout_sec")
    return exact.ceil_mul(seconds, price_micro_per_ksec * gpu_count, 1000)


def charge_for_usage(price_micro_per_ksec: int, gpu_seconds: float) -> int:
    """What ``gpu_seconds`` (summed over GPUs) cost at this price, rounded *down*.

    Down, so that a user never pays for a fraction of a micro-unit they did not use; with the hold
    rounded up, usage within ``timeout x gpu_count`` never costs more than the hold.
    """
    _check_int(price_micro_per_ksec, "price_micro_per_ksec", minimum=0)
    return exact.floor_mul(_check_seconds(gpu_seconds, "gpu_seconds"), price_micro_per_ksec, 1000)


def settle(outcome: Outcome, hold_micro: int, usage_charge_micro: int) -> tuple[int, int]:
    """Split an escrow hold into (pay to the node owner, refund to the user); they sum to the hold.

    The node is paid its usage charge, capped at the hold, for every outcome where it did the work
    (success, the user's program failing, a user stop, a timeout); a node-caused failure pays nothing.
    """
    _check_int(hold_micro, "hold_micro", minimum=0)
    _check_int(usage_charge_micro, "usage_charge_micro", minimum=0)
    pay = 0 if outcome is Outcome.NODE_FAILED else min(usage_charge_micro, hold_micro)
    return pay, hold_micro - pay


def settlement_outcome(task: TaskView) -> Outcome:
    """The outcome to settle a finished task with; a live task cannot be settled yet."""
    if task.outcome is None or not task.is_terminal:
        raise _refuse(task, "settle")
    return task.outcome
