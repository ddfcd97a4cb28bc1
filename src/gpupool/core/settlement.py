"""What the end of a task costs and pays: billed from what the hub saw, never beyond it.

A node signs how much it used; a signature proves who said it, not that it is true. So the hub bills
the smaller of that claim and what it observed itself::

    billable = min(claimed, units x observed x (1 + tolerance))   a node that signs its usage
    billable = units x observed                                   an account-bound node: the hub's clock
    charge   = min(floor(price x billable / 1000), hold)          0 when the node caused the end

- ``units``: the task's GPUs, a CPU-only task counting as one, exactly as its hold is priced.
- ``observed``: from the assignment (the earliest a node can start) to the hub's receipt of the end,
  at most ``timeout_sec``, and at most ``stop_grace_sec`` past a stop the user asked for.
- ``claimed``: the node's signed figure in the same unit-seconds, ``max(gpu_seconds, duration_sec)``
  (a task on a node without GPUs reports ``gpu_seconds`` 0 and runs as one unit).
- ``tolerance`` (``USAGE_TOLERANCE``, 2 %): room for a node clock running a little fast and for the
  rounding of its figures. An honest claim never needs more: a node starts after the hub assigns and
  reports after it ends, so its own measure is shorter than the hub's.

The node's contribution score is computed from the same billable figure (``contribution_score``), and
the payment goes to the node's owner: a node with no owner is paid nothing, the hold goes back to the
user whole ("no owner, no pay").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from gpupool.core import ledger, rewards, scheduling
from gpupool.core.scheduling import Outcome, TaskView
from gpupool.errors import InvalidInput

USAGE_TOLERANCE = 0.02
"""How far a signed claim may exceed the hub's own measure and still be paid as claimed."""


def requested_gpus(requirements: Mapping[str, object]) -> int:
    """The GPUs a task asks for: ``gpu_count``, or one when it asks for GPU memory, else none."""
    count = requirements.get("gpu_count")
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        return count
    return 1 if requirements.get("min_vram_gb") else 0


def billing_units(requirements: Mapping[str, object]) -> int:
    """Units a task is held and billed for: its GPUs, a CPU-only task counting as one."""
    return max(requested_gpus(requirements), 1)


def observed_seconds(task: TaskView, stop_grace_sec: float) -> float:
    """Seconds the hub saw the task's last attempt run: assignment to end, capped as the module says."""
    if task.assigned_at is None or task.finished_at is None:
        return 0.0
    end = min(task.finished_at, task.assigned_at + task.timeout_sec)
    if task.stop_requested_at is not None:
        end = min(end, task.stop_requested_at + stop_grace_sec)
    return max(0.0, end - task.assigned_at)


def _figure(usage: Mapping[str, object], key: str) -> float:
    value = usage.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    return max(0.0, float(value))


def claimed_seconds(usage: Mapping[str, object] | None) -> float:
    """The node's signed claim in unit-seconds (0 when it reported nothing)."""
    if not usage:
        return 0.0
    return max(_figure(usage, "gpu_seconds"), _figure(usage, "duration_sec"))


def billable_seconds(
    claimed: float, units: int, observed: float, tolerance: float, *, bills_from_report: bool
) -> float:
    """Unit-seconds to bill: the claim within what the hub saw, or the hub's clock alone."""
    if units < 1 or observed < 0 or tolerance < 0:
        raise InvalidInput("units >= 1, observed >= 0 and tolerance >= 0", field="usage")
    ceiling = units * observed
    if not bills_from_report:
        return ceiling
    return max(0.0, min(claimed, ceiling * (1 + tolerance)))


@dataclass(frozen=True, slots=True)
class Terms:
    """What the hub knows of a task and its node when it settles, beside the task's view."""

    account: str  # the user's ledger account
    hold_micro: int
    price_micro_per_ksec: int
    units: int
    owner: str | None  # the node's owner; None: nobody to pay
    tolerance: float
    stop_grace_sec: float
    bills_from_report: bool = True  # False: an account-bound node, billed from the hub's clock only


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one task settles: the charge paid to the payee, the refund, and the posting doing both."""

    billable_sec: float
    observed_sec: float
    charge_micro: int
    refund_micro: int
    posting: ledger.Posting | None  # None only when nothing was held


def settle_task(task: TaskView, terms: Terms, usage: Mapping[str, object] | None) -> Settlement:
    """Split a finished task's hold by the rule above, as one balanced ledger posting."""
    outcome = scheduling.settlement_outcome(task)
    observed = observed_seconds(task, terms.stop_grace_sec)
    billable = billable_seconds(
        claimed_seconds(usage),
        terms.units,
        observed,
        terms.tolerance,
        bills_from_report=terms.bills_from_report,
    )
    if outcome is Outcome.NODE_FAILED:
        billable = 0.0
    charge = scheduling.charge_for_usage(terms.price_micro_per_ksec, billable)
    pay, refund = scheduling.settle(outcome, terms.hold_micro, charge)
    if not terms.owner:
        pay, refund = 0, terms.hold_micro
    posting = None
    if terms.hold_micro:  # with nothing to pay the payee takes no leg: the hold goes back whole
        posting = ledger.settlement(terms.account, terms.hold_micro, terms.owner or terms.account, pay)
    return Settlement(billable, observed, pay, refund, posting)


def contribution_score(
    billable_sec: float, gpu_name: str | None, claimed_cpu_seconds: float, cpu_cores: int
) -> int:
    """A node's score for a task, from the billed figure: never from a claim the bill refused.

    On a GPU node the billed GPU-seconds are scored; on a CPU node the claimed core-seconds, at most
    its cores for the billed time.
    """
    if gpu_name:
        return rewards.gpu_score(billable_sec, gpu_name)
    cpu = min(max(0.0, claimed_cpu_seconds), max(cpu_cores, 1) * billable_sec)
    return rewards.cpu_score(cpu)
