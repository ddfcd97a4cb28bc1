"""Out-of-range figures from a node are refused at the edge with 422 naming the field, never a 500."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gpupool import crypto
from gpupool.core.ports import FakeClock
from tests.conftest import LiveHub
from tests.simnode import SimNode


@pytest.fixture
async def hub(live_hub_factory: Callable[..., Awaitable[LiveHub]]) -> LiveHub:
    return await live_hub_factory()


async def assigned(hub: LiveHub, clock: FakeClock, name: str) -> tuple[SimNode, dict[str, str], str]:
    user = await hub.make_user(name, balance=10_000_000)
    node = SimNode(hub, clock, f"{name}-1")
    await node.connect()
    body = {"command": ["echo", "hi"], "max_price_micro_per_ksec": 2_000_000, "timeout_sec": 1000}
    task_id = (await hub.http.post("/v1/tasks", json=body, headers=user)).json()["task_id"]
    assert (await node.command("assign"))["task"]["task_id"] == task_id
    return node, user, task_id


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"usage": {"gpu_seconds": 1e300}}, "usage.gpu_seconds"),
        ({"exit_code": 2**63}, "exit_code"),
        ({"artifacts": [{"path": "a", "size": 2**64, "sha256": "0" * 64}]}, "artifacts.0.size"),
    ],
)
async def test_a_result_out_of_range_over_http_is_422_naming_the_field(
    hub: LiveHub, clock: FakeClock, bad: dict[str, Any], field: str
) -> None:
    node, user, task_id = await assigned(hub, clock, "range")
    body = {"task_id": task_id, "exit_code": 0, "status": "succeeded", "usage": {}, "artifacts": [], **bad}
    signed = crypto.sign_body(node.key, crypto.KIND_TASK_RESULT, body, created_at=int(clock.now()))
    resp = await hub.http.post(
        f"/v1/tasks/{task_id}/result", json=signed, headers={"X-Session-Token": node.token}
    )
    assert resp.status_code == 422 and resp.json()["error"]["details"]["field"] == field
    assert (await hub.http.get(f"/v1/tasks/{task_id}", headers=user)).json()["status"] == "assigned"
    await node.ws.close()


@pytest.mark.parametrize(("seq", "stream"), [(2**63, "stdout"), (-1, "stdout"), (0, "stdin")])
async def test_an_output_chunk_out_of_range_is_422(
    hub: LiveHub, clock: FakeClock, seq: int, stream: str
) -> None:
    node, _user, task_id = await assigned(hub, clock, "chunk")
    resp = await node.output(task_id, seq, "hi", stream=stream)
    assert resp.status_code == 422
    assert resp.json()["error"]["details"]["field"] == ("stream" if stream == "stdin" else "seq")
    await node.ws.close()


async def test_a_heartbeat_out_of_range_is_answered_with_an_error_and_the_socket_goes_on(
    hub: LiveHub, clock: FakeClock
) -> None:
    node, _user, _task_id = await assigned(hub, clock, "beat")
    await node.ws.send(json.dumps({"queue_len": 2**63, "running_task_ids": []}))
    error = await node.command("error")
    assert error["code"] == "invalid_input" and "queue_len" in error["message"]
    await node.ws.send(json.dumps({"queue_len": 1, "running_task_ids": ["t1"]}))
    assert (await node.command("ack"))["next_heartbeat_sec"] > 0
    await node.ws.close()
