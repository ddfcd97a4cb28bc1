"""The hub↔node contract: every message decodes to its type or is refused naming the field."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpupool import wire
from gpupool.errors import InvalidInput

TASK = "a" * 32


def result(**over: Any) -> dict[str, Any]:
    return {"task_id": TASK, "exit_code": 0, "status": "succeeded", "usage": {"gpu_seconds": 1.5}, **over}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"usage": {"gpu_seconds": 1e300}}, "usage.gpu_seconds"),
        ({"usage": {"gpu_seconds": math.nan}}, "usage.gpu_seconds"),
        ({"usage": {"cpu_seconds": -0.5}}, "usage.cpu_seconds"),
        ({"usage": {"duration_sec": "5"}}, "usage.duration_sec"),
        ({"usage": {"gpu_util_avg": 101.0}}, "usage.gpu_util_avg"),
        ({"usage": {"gpu_seconds": True}}, "usage.gpu_seconds"),
        ({"exit_code": 2**31}, "exit_code"),
        ({"exit_code": -(2**63)}, "exit_code"),
        ({"exit_code": "0"}, "exit_code"),
        ({"status": "paid"}, "status"),
        ({"task_id": "x" * 65}, "task_id"),
        ({"task_id": ""}, "task_id"),
        ({"artifacts": [{"path": "a", "size": 2**63, "sha256": "0" * 64}]}, "artifacts.0.size"),
        ({"artifacts": [{"path": "a", "size": 1, "sha256": "not-hex"}]}, "artifacts.0.sha256"),
        ({"artifacts": [{"path": "", "size": 1, "sha256": "0" * 64}]}, "artifacts.0.path"),
    ],
)
def test_a_result_out_of_range_is_refused_naming_the_field(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        wire.decode(wire.TaskResult, result(**bad))
    assert refused.value.details == {"field": field}


def test_too_many_artifacts_is_refused() -> None:
    many = [{"path": f"f{i}", "size": 1, "sha256": "0" * 64} for i in range(wire.messages.MAX_ARTIFACTS + 1)]
    with pytest.raises(InvalidInput) as refused:
        wire.decode(wire.TaskResult, result(artifacts=many))
    assert refused.value.details == {"field": "artifacts"}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"seq": 2**63}, "seq"),
        ({"seq": -1}, "seq"),
        ({"stream": "stdin"}, "stream"),
        ({"data": "x" * (wire.MAX_OUTPUT_CHUNK + 1)}, "data"),
    ],
)
def test_an_output_chunk_out_of_range_is_refused(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        wire.decode(wire.OutputChunk, {"seq": 0, "stream": "stdout", "data": "hi", **bad})
    assert refused.value.details == {"field": field}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"queue_len": 10**7}, "queue_len"),
        ({"gpus": [{"index": 0, "util_pct": 250.0}]}, "gpus.0.util_pct"),
        ({"gpus": [{"index": i} for i in range(65)]}, "gpus"),
        ({"running_task_ids": ["t"] * (wire.MAX_RUNNING + 1)}, "running_task_ids"),
        ({"running_task_ids": ["x" * 65]}, "running_task_ids.0"),
        ({"mem_free_gb": math.inf}, "mem_free_gb"),
    ],
)
def test_a_heartbeat_out_of_range_is_refused(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        wire.decode(wire.Heartbeat, {"queue_len": 0, **bad})
    assert refused.value.details == {"field": field}


def test_json_text_decodes_like_a_dict_and_unknown_fields_are_ignored() -> None:
    text = json.dumps({"queue_len": 2, "running_task_ids": [TASK], "from_a_newer_node": 1})
    assert wire.decode(wire.Heartbeat, text) == wire.decode(wire.Heartbeat, json.loads(text))
    assert wire.decode(wire.Heartbeat, text).running_task_ids == [TASK]
    assert wire.decode(wire.Heartbeat, {}).running_task_ids is None  # an older node said nothing


def test_messages_are_frozen() -> None:
    beat = wire.Heartbeat(queue_len=1)
    with pytest.raises(ValueError):
        beat.queue_len = 2  # type: ignore[misc]


def test_a_hub_frame_is_typed_and_an_unknown_kind_is_skipped() -> None:
    assign = wire.Assign(task=wire.TaskAssignment(task_id=TASK, command=["true"], timeout_sec=5))
    frame = wire.envelope([assign, wire.Stop(task_id=TASK), {"type": "from_the_future"}])
    assert wire.decode_hub_frame(json.dumps(frame)) == [assign, wire.Stop(task_id=TASK)]
    assert wire.decode_hub_frame(json.dumps(wire.encode(assign))) == [assign]
    with pytest.raises(InvalidInput):
        wire.decode_hub_frame(json.dumps({"type": "ack", "next_heartbeat_sec": -1}))


def test_a_node_message_is_a_result_or_a_heartbeat() -> None:
    report = wire.decode_node_message({"type": "result", "result": result()})
    assert isinstance(report, wire.ResultReport) and report.result["task_id"] == TASK
    assert isinstance(wire.decode_node_message({"queue_len": 1}), wire.Heartbeat)


figures = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)


@given(
    usage=st.builds(
        wire.Usage,
        gpu_seconds=figures | st.none(),
        cpu_seconds=figures | st.none(),
        gpu_util_avg=st.floats(0, 100) | st.none(),
        duration_sec=figures | st.none(),
    ),
    exit_code=st.integers(-(2**31), 2**31 - 1),
    status=st.sampled_from(["succeeded", "failed", "stopped", "expired"]),
    task_id=st.text(min_size=1, max_size=64),
)
def test_what_a_node_encodes_the_hub_decodes_to_the_same_result(
    usage: wire.Usage, exit_code: int, status: str, task_id: str
) -> None:
    sent = wire.TaskResult(task_id=task_id, exit_code=exit_code, status=status, usage=usage)  # type: ignore[arg-type]
    assert wire.decode(wire.TaskResult, json.loads(json.dumps(wire.encode(sent)))) == sent
