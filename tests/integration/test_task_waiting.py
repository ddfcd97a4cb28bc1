"""A queued task says why it waits; a running task being stopped says ``stopping``, not ``running``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from gpupool.core.ports import FakeClock
from tests.conftest import LiveHub
from tests.simnode import PRICE, SimNode


async def submit(hub: LiveHub, user: dict[str, str], **over: Any) -> str:
    body = {"command": ["echo", "hi"], "max_price_micro_per_ksec": 3_000_000, "timeout_sec": 100, **over}
    resp: httpx.Response = await hub.http.post("/v1/tasks", json=body, headers=user)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["task_id"])


async def test_waiting_reason_follows_the_pool(
    live_hub_factory: Callable[..., Awaitable[LiveHub]], clock: FakeClock
) -> None:
    hub = await live_hub_factory()
    user = await hub.make_user("wanda", balance=100_000_000)
    lonely = await submit(hub, user)
    task = (await hub.http.get(f"/v1/tasks/{lonely}", headers=user)).json()
    assert (task["status"], task["waiting_reason"]) == ("queued", "no node has registered with the hub")

    node = SimNode(hub, clock, "cpu-box", gpus=[])  # a CPU node
    await node.connect()
    await node.command("assign")  # the first task fits the CPU node and leaves the queue
    gpu_task = await submit(hub, user, requirements={"gpu_count": 1})
    cheap = await submit(hub, user, max_price_micro_per_ksec=PRICE // 2)
    listed = {t["task_id"]: t for t in (await hub.http.get("/v1/tasks", headers=user)).json()}
    assert listed[gpu_task]["waiting_reason"] == "no online node has a GPU"
    assert listed[cheap]["waiting_reason"] == "price cap below every node's price"
    assert listed[lonely]["status"] == "assigned" and listed[lonely]["waiting_reason"] is None


async def test_stopping_a_running_task_answers_stopping_until_the_node_reports(
    live_hub_factory: Callable[..., Awaitable[LiveHub]], clock: FakeClock
) -> None:
    hub = await live_hub_factory()
    user = await hub.make_user("stan", balance=100_000_000)
    node = SimNode(hub, clock, "gpu-1")
    await node.connect()
    task_id = await submit(hub, user)
    await node.command("assign")
    await node.output(task_id, 0, "working\n")
    answer = (await hub.http.post(f"/v1/tasks/{task_id}/stop", headers=user)).json()
    assert answer["status"] == "stopping"
    assert (await node.command("stop"))["task_id"] == task_id
    assert (await node.result(task_id, status="stopped", gpu_seconds=1.0)).status_code == 200
    again = (await hub.http.post(f"/v1/tasks/{task_id}/stop", headers=user)).json()
    assert again["status"] == "stopped"
