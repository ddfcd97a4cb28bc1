"""Every message the hub and a node exchange, as frozen types with the ranges each field may take.

The heartbeat socket carries the commands (``assign``, ``stop``), the node's heartbeats and its signed
``result``s, the hub's ``ack``s and ``result_ack``s, and (``gpupool.batch.v1``) envelopes of several;
output chunks and results also go over HTTP (``POST /v1/tasks/{id}/output``, ``…/result``). Both sides
build and read these types only, so a field means the same thing on both ends and a figure out of range
is refused where it enters (``codec.decode``), never deep in settlement or in the database.

pydantic models: their validation runs in compiled code, so a heartbeat is checked as fast as the
standard library parses its JSON (``bench/wire.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

INT64_MAX = 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# Seconds, MB and the like a node measures: ~31,700 years of GPU time, an exabyte of memory.
MAX_FIGURE = 1e12
MAX_BATCH = 1000  # messages in one envelope: a bound on what one frame asks of its reader
MAX_OUTPUT_CHUNK = 1 << 20  # characters of one output chunk
MAX_RUNNING = 1024  # task ids a node lists as running
MAX_ARTIFACTS = 10_000
MAX_GPUS = 64

TaskId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Figure = Annotated[float, Field(ge=0, le=MAX_FIGURE)]
Percent = Annotated[float, Field(ge=0, le=100)]
ExitCode = Annotated[int, Field(ge=INT32_MIN, le=INT32_MAX)]
Seq = Annotated[int, Field(ge=0, le=2**53 - 1)]  # exact in every JSON reader, so the document bounds it
Micro = Annotated[int, Field(ge=0, le=INT64_MAX)]
Arg = Annotated[str, StringConstraints(max_length=1 << 16)]
TaskStatus = Literal["succeeded", "failed", "stopped", "expired"]
Stream = Literal["stdout", "stderr"]


class Message(BaseModel):
    """Frozen, strict (no ``"1"`` for 1, no ``true`` for 1), no NaN or infinity; unknown keys ignored,
    so an older peer reads a newer one's messages."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore", allow_inf_nan=False)


# -- node → hub ---------------------------------------------------------------------------------------


class GpuTelemetry(Message):
    index: int = Field(ge=0, le=1023)
    util_pct: Percent | None = None
    mem_used_mb: Figure | None = None
    mem_total_mb: Figure | None = None
    temp_c: float | None = Field(None, ge=-50, le=200)
    power_w: float | None = Field(None, ge=0, le=10_000)


class Heartbeat(Message):
    """One beat on the socket (a frame with no ``type``): load, GPU telemetry, the tasks it runs."""

    ts: float | None = Field(None, ge=0, le=MAX_FIGURE)
    queue_len: int = Field(0, ge=0, le=1_000_000)
    avg_latency_ms: Figure | None = None
    gpus: list[GpuTelemetry] = Field(default_factory=list, max_length=MAX_GPUS)
    mem_free_gb: Figure | None = None
    # The ids of the tasks the node runs now; None: the node did not say (an older node).
    running_task_ids: list[TaskId] | None = Field(None, max_length=MAX_RUNNING)


class Usage(Message):
    """What a task used, as the node measured it; an absent figure was not measured."""

    gpu_seconds: Figure | None = None
    gpu_util_avg: Percent | None = None
    vram_peak_mb: Figure | None = None
    cpu_seconds: Figure | None = None
    ram_peak_mb: Figure | None = None
    duration_sec: Figure | None = None


class Artifact(Message):
    path: str = Field(min_length=1, max_length=1024)
    size: int = Field(ge=0, le=INT64_MAX)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class TaskResult(Message):
    """The body of a signed result (kind 21002); the signature (``sig_event``) travels beside it."""

    task_id: TaskId
    exit_code: ExitCode = 1
    status: TaskStatus = "succeeded"
    usage: Usage | None = None
    artifacts: list[Artifact] = Field(default_factory=list, max_length=MAX_ARTIFACTS)


class ResultReport(Message):
    """A signed result on the socket; ``result`` is the signed body exactly as signed."""

    type: Literal["result"] = "result"
    result: dict[str, Any]


class OutputChunk(Message):
    """Part of a task's output; ``seq`` orders stdout and stderr together and makes a resend harmless."""

    seq: Seq
    stream: Stream
    data: str = Field(max_length=MAX_OUTPUT_CHUNK)


# -- hub → node ---------------------------------------------------------------------------------------


class TaskAssignment(Message):
    task_id: TaskId
    command: list[Annotated[str, StringConstraints(max_length=1 << 16)]] = Field(
        min_length=1, max_length=4096
    )
    env: dict[Annotated[str, StringConstraints(max_length=1024)], str] = Field(
        default_factory=dict, max_length=1024
    )
    timeout_sec: float = Field(gt=0, le=MAX_FIGURE)
    gpu_indices: list[Annotated[int, Field(ge=0, le=1023)]] = Field(default_factory=list, max_length=MAX_GPUS)
    bundle: bool = False


class Assign(Message):
    type: Literal["assign"] = "assign"
    task: TaskAssignment


class Stop(Message):
    type: Literal["stop"] = "stop"
    task_id: TaskId


class Registered(Message):
    """The hub's answer to a registration (``POST /v1/miners/register``): the session to beat on."""

    miner_id: str = Field(min_length=1, max_length=64)
    status: str = Field("online", max_length=16)
    session_token: str = Field(min_length=1, max_length=128)
    lease_ttl_sec: int = Field(0, ge=0, le=INT64_MAX)
    next_heartbeat_sec: float = Field(10.0, gt=0, le=86_400)


class Ack(Message):
    """The answer to a heartbeat: when to beat next."""

    type: Literal["ack"] = "ack"
    next_heartbeat_sec: float = Field(gt=0, le=86_400)


class ResultAck(Message):
    """The answer to a result on the socket: the status ``POST /v1/tasks/{id}/result`` would give."""

    type: Literal["result_ack"] = "result_ack"
    task_id: str | None = Field(None, max_length=64)
    status: int = Field(ge=100, le=599)
    code: str | None = Field(None, max_length=64)
    message: str | None = Field(None, max_length=500)
    state: TaskStatus | Literal["queued", "assigned", "running"] | None = None
    cost: Micro | None = None


class Error(Message):
    """A frame the hub could not read; the socket stays open."""

    type: Literal["error"] = "error"
    code: str = Field(max_length=64)
    message: str = Field(max_length=500)


class Batch(Message):
    """Several messages in one frame (subprotocol ``gpupool.batch.v1``); each is read on its own."""

    type: Literal["batch"] = "batch"
    messages: list[dict[str, Any]] = Field(max_length=MAX_BATCH)


HubMessage = Assign | Stop | Ack | ResultAck | Error
NodeMessage = Heartbeat | ResultReport
