"""The limits the hub enforces on tasks itself, from ``HubSettings`` (``GPUPOOL_HUB_…``)."""

from __future__ import annotations

from dataclasses import dataclass

from gpupool.core.settlement import USAGE_TOLERANCE


@dataclass(frozen=True, slots=True)
class TaskRules:
    """How long the hub waits on a node before it acts, and how far it believes a node's figures."""

    dispatch_timeout_sec: float = 60.0  # assigned, no sign of a start: back to the queue
    stop_grace_sec: float = 15.0  # a user's stop the node has not confirmed: the hub ends it
    timeout_grace_sec: float = 30.0  # past timeout_sec + this: stop pushed, the task expired
    usage_tolerance: float = USAGE_TOLERANCE
