"""The range of every number and the size of every string the hub takes from outside, in one place.

A value that reaches storage must fit its column (BIGINT, INTEGER, a float's finite range), and a
value the hub keeps in memory must be small enough that a thousand of them do not exhaust it. Each
edge (HTTP models, the WebSocket, gRPC, signed bodies) checks with these types or ``check_*``, so an
out-of-range value is a 422 naming its field, never an overflow deep in the database driver (a 500).
The README's API section and SECURITY.md list the same figures.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictFloat, StrictInt

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MAX = 2**63 - 1
# The largest integer every JSON reader keeps exactly (a double's 53-bit mantissa): sequence numbers,
# cursors and epochs a client sends stay below it, so the document's bound is the one enforced.
MAX_JSON_INT = 2**53 - 1
PUBKEY_PATTERN = r"^([0-9a-fA-F]{64}|npub1[02-9ac-hj-np-z]{58})$"
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
# The largest float that survives a round trip through every store we use with integer precision
# to the second; sums of these over many tasks stay below INT64_MAX micro-units of score.
MAX_SECONDS = 10**9  # ~31 years: any duration, timeout or GPU-seconds figure a node may report
MAX_TIMESTAMP = 2**40  # seconds since 1970: year ~36812; anything beyond is a forged clock
MAX_PAGE = 10**6  # pages of a listing (x page_size <= 500 stays far below BIGINT offsets)
MAX_MONEY_MICRO = 10**15  # one amount or price: 10^9 tokens; many of them still fit BIGINT

MAX_MEASURE = 10**12
MAX_LABEL_CHARS = 128

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
MAX_JSON_DEPTH = 32  # nesting of any JSON a socket or a signed body may carry

# Task bundles (``.tar.gz``): what a bundle may unpack to, checked at upload and while extracting.
MAX_BUNDLE_UNPACKED_BYTES = 1024**3  # 1 GiB
MAX_BUNDLE_FILES = 10_000

Int32 = Annotated[StrictInt, Field(ge=INT32_MIN, le=INT32_MAX)]
"""An integer stored in a 4-byte column (exit codes)."""
NonNegInt64 = Annotated[StrictInt, Field(ge=0, le=MAX_JSON_INT)]
"""An integer stored in a BIGINT column (sequence numbers, ids), within JSON's exact range."""
PositiveInt64 = Annotated[StrictInt, Field(ge=1, le=INT64_MAX)]
Page = Annotated[int, Field(ge=1, le=MAX_PAGE)]
"""A page number in a listing's query string."""
Seconds = Annotated[StrictFloat | StrictInt, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]
Label = Annotated[str, Field(max_length=MAX_LABEL_CHARS)]
"""A short name: a tag, a capability, a region, a job id."""
Measure = Annotated[float, Field(ge=0, le=MAX_MEASURE, allow_inf_nan=False)]
"""A size or a duration a client states (GB, MB, ms): finite, not negative, at most 10^12."""
Timestamp = Annotated[float, Field(ge=0, le=MAX_TIMESTAMP, allow_inf_nan=False)]


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
