"""The range of every number and the size of every string the hub takes from outside, in one place.

A value that reaches storage must fit its column (BIGINT, INTEGER, a float's finite range), and a
value the hub keeps in memory must be small enough that a thousand of them do not exhaust it. Each
edge (the HTTP models, the heartbeat socket, the task bundles) checks with these, so an out-of-range
value is a 422 naming its field, never an overflow deep in the database driver (a 500). The core keeps
its own bounds on what it computes with (exit codes, usage figures) and ``crypto`` on signed events.
The README's API section and SECURITY.md list the same figures.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictInt

# The largest integer every JSON reader keeps exactly (a double's 53-bit mantissa): sequence numbers,
# cursors, epochs and heights a client sends stay below it, far inside a BIGINT column.
MAX_JSON_INT = 2**53 - 1
MAX_TIMESTAMP = 2**40  # seconds since 1970: year ~36812; anything beyond is a forged clock
MAX_PAGE = 10**6  # pages of a listing (x page_size <= 500 stays far below BIGINT offsets)
MAX_MONEY_MICRO = 10**15  # one amount, price or score: 10^9 tokens; many of them still fit BIGINT
MAX_MEASURE = 10**12  # a size or a duration a client states (GB, MB, ms)
MAX_LABEL_CHARS = 128
PUBKEY_PATTERN = r"^([0-9a-fA-F]{64}|npub1[02-9ac-hj-np-z]{58})$"
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"

# Strings and the task spec.
MAX_TASK_SPEC_BYTES = 64 * 1024  # a task's JSON spec (command + env + everything else)
MAX_COMMAND_ARGS = 256
MAX_COMMAND_ARG_CHARS = 8 * 1024
MAX_ENV_VARS = 256
MAX_ENV_NAME_CHARS = 256
MAX_ENV_VALUE_CHARS = 8 * 1024
MAX_WS_FRAME_BYTES = 4 * 1024 * 1024  # one WebSocket message to the hub (heartbeat, batched results)
# One message from the hub to a node: an envelope of up to MAX_BATCH assignments of a full task spec.
MAX_NODE_WS_FRAME_BYTES = 64 * 1024 * 1024
MAX_JSON_DEPTH = 32  # nesting of any JSON message on the heartbeat socket

# Task bundles (``.tar.gz``): what a bundle may unpack to, checked at upload and while extracting.
MAX_BUNDLE_UNPACKED_BYTES = 1024**3  # 1 GiB
MAX_BUNDLE_FILES = 10_000

NonNegInt64 = Annotated[StrictInt, Field(ge=0, le=MAX_JSON_INT)]
"""An integer stored in a BIGINT column (sequence numbers), within JSON's exact range."""
Label = Annotated[str, Field(max_length=MAX_LABEL_CHARS)]
"""A short name: a tag, a capability, a region, a job id."""
Measure = Annotated[float, Field(ge=0, le=MAX_MEASURE, allow_inf_nan=False)]
"""A size or a duration a client states (GB, MB, ms): finite, not negative."""


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply ``value`` nests (a scalar is 0); stops counting past ``limit``, iteratively."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((child, depth) for child in (item.values() if isinstance(item, dict) else item))
    return deepest
