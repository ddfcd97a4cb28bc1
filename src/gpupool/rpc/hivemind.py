"""HiveMind's words and units on the ``nodepool`` wire, and the hub's for them (README: "HiveMind").

Pure translation, no rule: whole tokens (HiveMind's CPT) against micro-units, HiveMind's five status
strings against the hub's task states, its ``location`` against a region, and what a HiveMind worker's
result zip says about how its task ended.
"""

from __future__ import annotations

import io
import re
import zipfile

from gpupool.core.scheduling import TaskState
from gpupool.errors import InvalidInput

MICRO_PER_TOKEN = 1_000_000
INT32_MAX = 2**31 - 1

STATUS: dict[TaskState, str] = {
    TaskState.QUEUED: "PENDING",
    TaskState.ASSIGNED: "PENDING",
    TaskState.RUNNING: "RUNNING",
    TaskState.SUCCEEDED: "COMPLETED",
    TaskState.FAILED: "FAILED",
    TaskState.EXPIRED: "FAILED",
    TaskState.STOPPED: "STOPPED",
}

# What HiveMind's upload form sends for "anywhere" (its default is "Any").
NO_REGION = frozenset({"", "any", "*"})

# The line HiveMind's worker writes into execution_log.txt of every result zip it packs.
_STATUS_LINE = re.compile(rb"^Status:\s*(Success|Failed|Stopped by user)\s*$", re.MULTILINE)
EXECUTION_LOG = "execution_log.txt"


def status_of(state: TaskState) -> str:
    return STATUS[state]


def whole_tokens(micro: int) -> int:
    """Micro-units as the whole tokens HiveMind shows, rounded down (never more than is there)."""
    return micro // MICRO_PER_TOKEN


def micro_of(tokens: int, exact_micro: int, field: str) -> int:
    """The amount a request means: its exact ``*_micro`` addition when given, else its whole tokens."""
    if exact_micro and tokens and tokens * MICRO_PER_TOKEN != exact_micro:
        raise InvalidInput(f"{field} and {field}_micro disagree; send one of them", field=field)
    return exact_micro or tokens * MICRO_PER_TOKEN


def region_of(location: str) -> str | None:
    """HiveMind's ``location``: "Any", "" or "*" is no region; anything else is one."""
    location = location.strip()
    return None if location.lower() in NO_REGION else location


def int32(value: float) -> int:
    """A figure for an ``int32`` field: rounded, and held inside the type instead of failing the answer."""
    return max(-INT32_MAX - 1, min(INT32_MAX, round(value)))


def exit_code_of_result(result_zip: bytes) -> int | None:
    """How the worker said its task ended: 0 for ``Status: Success``, 1 for ``Failed``, None when the
    zip says nothing (or was stopped): HiveMind's own pool takes every uploaded result as completed."""
    try:
        with zipfile.ZipFile(io.BytesIO(result_zip)) as archive:
            info = archive.getinfo(EXECUTION_LOG)
            if info.file_size > 1 << 16:
                return None
            match = _STATUS_LINE.search(archive.read(info))
    except (KeyError, zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError):
        return None
    if match is None:
        return None
    return {b"Success": 0, b"Failed": 1}.get(match.group(1))
