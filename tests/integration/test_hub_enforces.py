"""The hub measures and enforces: no node bills beyond what the hub saw, no task or hold gets stuck.

Driven through a real hub (uvicorn in the test's loop) by a node the test plays over the real
protocol, on a clock the test moves: each rule is shown the way a lying or silent node meets it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from gpupool.core.ports import FakeClock
from gpupool.core.rewards import gpu_score
from gpupool.core.scheduling import charge_for_usage
from tests.conftest import LiveHub
from tests.factories import OWNER, registration
from tests.simnode import PRICE, SimNode

CAP = 3_000_000


@pytest.fixture
async def hub(live_hub_factory: Callable[..., Awaitable[LiveHub]]) -> LiveHub:
    return await live_hub_factory()


async def submit(hub: LiveHub, user: dict[str, str], **over: Any) -> str:
    body = {"command": ["work"], "max_price_micro_per_ksec": CAP, "timeout_sec": 1000, **over}
    resp = await hub.http.post("/v1/tasks", json=body, headers=user)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["task_id"])


async def status(hub: LiveHub, user: dict[str, str], task_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await hub.http.get(f"/v1/tasks/{task_id}", headers=user)).json()
    return body


async def balance(hub: LiveHub, account: str) -> tuple[int, int]:
    admin = await hub.admin_headers()
    b = (await hub.http.get(f"/v1/admin/accounts/{account}", headers=admin)).json()
    return b["available"], b["held"]


async def books_balance(hub: LiveHub) -> bool:
    admin = await hub.admin_headers()
    return bool((await hub.http.get("/v1/admin/ledger/trial-balance", headers=admin)).json()["balanced"])


async def test_an_inflated_usage_report_is_paid_and_scored_only_for_the_time_the_hub_saw(
    hub: LiveHub, clock: FakeClock
) -> None:
    user = await hub.make_user("victim", balance=10_000_000)
    node = SimNode(hub, clock, "liar")
    await node.connect()
    task_id = await submit(hub, user)
    await node.command("assign")
    await node.run_for(10)  # it ran 10 s on the hub's clock
    done = await node.result(task_id, gpu_seconds=1e6)  # and signs a million GPU-seconds
    assert done.status_code == 200 and done.json()["status"] == "succeeded"
    cost = done.json()["cost"]
    assert cost == charge_for_usage(PRICE, 10 * 1.02)  # 2 tokens/ksec x 10 s x 1 GPU x 1.02, ~20,400
    assert cost <= PRICE * 1 * 10 * 1.02 / 1000  # not the 3,000,000 held
    assert await balance(hub, "user:victim") == (10_000_000 - cost, 0)
    assert await balance(hub, OWNER) == (cost, 0)
    stats = (await hub.http.get("/v1/contributions/stats?node_id=liar", headers=user)).json()
    assert stats["total_compute_score"] == gpu_score(10 * 1.02, "NVIDIA H100 80GB HBM3")  # ~10,200
    assert stats["total_compute_seconds"] == 10.0
    assert await books_balance(hub)
    await node.ws.close()


async def test_a_stopped_nobody_asked_for_is_a_node_failure_requeued_and_unpaid(
    hub: LiveHub, clock: FakeClock
) -> None:
    user = await hub.make_user("unstopped", balance=10_000_000)
    node = SimNode(hub, clock, "quitter")
    await node.connect()
    task_id = await submit(hub, user, max_attempts=2)
    await node.command("assign")
    await node.run_for(20)
    answer = await node.result(task_id, status="stopped", exit_code=-15, gpu_seconds=20.0)
    assert answer.status_code == 200 and answer.json()["status"] == "queued" and answer.json()["cost"] is None
    await node.beat()  # free again
    again = await node.command("assign")  # back in the queue: the same node may get it again
    assert again["task"]["task_id"] == task_id
    replay = await node.result(task_id, status="stopped", exit_code=-15, gpu_seconds=20.0)
    assert replay.json()["error"]["code"] == "replayed_event"  # the same event again changes nothing
    assert (await status(hub, user, task_id))["attempts"] == 2
    await node.run_for(5)
    last = await node.result(task_id, status="stopped", exit_code=-15, gpu_seconds=5.0)
    assert last.json()["status"] == "failed"  # a fresh report, and the last attempt: failed, unpaid
    final = await status(hub, user, task_id)
    assert (final["status"], final["outcome"], final["cost"]) == ("failed", "node_failed", 0)
    assert await balance(hub, "user:unstopped") == (10_000_000, 0)
    assert (await balance(hub, OWNER))[0] == 0
    assert await books_balance(hub)
    await node.ws.close()


async def test_a_silent_node_loses_the_task_after_the_dispatch_timeout_and_the_hold_comes_back(
    hub: LiveHub, clock: FakeClock
) -> None:
    user = await hub.make_user("waiting", balance=10_000_000)
    silent = SimNode(hub, clock, "silent")
    silent.lists_tasks = False  # beats, but never shows a start, output or result
    await silent.connect()
    task_id = await submit(hub, user, max_attempts=1)
    await silent.command("assign")
    await silent.run_for(60)
    assert (await status(hub, user, task_id))["status"] == "assigned"  # exactly the timeout: not yet
    await silent.run_for(10)
    await hub.hub.tasks.enforce()  # the hub's own tick may have got there first
    final = await status(hub, user, task_id)
    assert (final["status"], final["outcome"], final["cost"]) == ("failed", "node_failed", 0)
    assert (await silent.command("stop"))["task_id"] == task_id  # told to drop it, should it start late
    assert await balance(hub, "user:waiting") == (10_000_000, 0)
    late = await silent.result(task_id, gpu_seconds=70.0)  # a result after the hub ended it
    assert late.status_code == 200 and late.json()["cost"] == 0
    assert await balance(hub, "user:waiting") == (10_000_000, 0)
    await silent.ws.close()


async def test_a_users_stop_ends_the_task_within_the_stop_grace_whatever_the_node_does(
    hub: LiveHub, clock: FakeClock
) -> None:
    user = await hub.make_user("stopper", balance=10_000_000)
    node = SimNode(hub, clock, "deaf")
    await node.connect()
    task_id = await submit(hub, user)
    await node.command("assign")
    await node.run_for(20)
    asked = (await hub.http.post(f"/v1/tasks/{task_id}/stop", headers=user)).json()
    assert asked["status"] == "stopping"  # until the node confirms, or the stop grace runs out
    assert (await node.command("stop"))["task_id"] == task_id  # the node ignores it
    await node.run_for(10)
    assert (await status(hub, user, task_id))["status"] == "running"
    await node.run_for(10)  # past the 15 s stop grace
    await hub.hub.tasks.enforce()
    final = await status(hub, user, task_id)
    assert (final["status"], final["cost"]) == ("stopped", 0)  # no report: nothing to pay for
    assert await balance(hub, "user:stopper") == (10_000_000, 0)
    assert await books_balance(hub)
    await node.ws.close()


async def test_a_node_confirming_a_stop_is_paid_up_to_the_stop_grace(hub: LiveHub, clock: FakeClock) -> None:
    user = await hub.make_user("stopper2", balance=10_000_000)
    node = SimNode(hub, clock, "obedient")
    await node.connect()
    task_id = await submit(hub, user)
    await node.command("assign")
    await node.run_for(20)
    await hub.http.post(f"/v1/tasks/{task_id}/stop", headers=user)
    await node.command("stop")
    done = await node.result(task_id, status="stopped", exit_code=-15, gpu_seconds=20.0)
    assert (done.json()["status"], done.json()["cost"]) == ("stopped", 40_000)
    assert await balance(hub, "user:stopper2") == (10_000_000 - 40_000, 0)
    await node.ws.close()


async def test_a_task_past_its_timeout_is_stopped_and_expired_by_the_hub(
    hub: LiveHub, clock: FakeClock
) -> None:
    user = await hub.make_user("slow", balance=10_000_000)
    node = SimNode(hub, clock, "forever")
    await node.connect()
    task_id = await submit(hub, user, timeout_sec=100)
    await node.command("assign")
    await node.run_for(130)  # timeout + the 30 s grace, exactly: not yet
    assert (await status(hub, user, task_id))["status"] == "running"
    await node.run_for(10)
    await hub.hub.tasks.enforce()
    final = await status(hub, user, task_id)
    assert (final["status"], final["cost"]) == ("expired", 0)
    assert (await node.command("stop"))["task_id"] == task_id
    late = await node.result(task_id, status="expired", exit_code=-9, gpu_seconds=100.0)
    assert late.json()["status"] == "expired" and late.json()["cost"] == 0  # settled once, by the hub
    assert await balance(hub, "user:slow") == (10_000_000, 0)
    await node.ws.close()


async def test_a_node_registering_again_loses_the_tasks_it_no_longer_runs_at_once(
    hub: LiveHub, clock: FakeClock
) -> None:
    user = await hub.make_user("restart", balance=10_000_000)
    node = SimNode(hub, clock, "phoenix", max_parallel=2)
    await node.connect()
    kept, lost = await submit(hub, user, max_attempts=2), await submit(hub, user, max_attempts=2)
    await node.command("assign")
    await node.command("assign")
    await node.run_for(10)
    await node.ws.close()  # killed; starts again within the grace period, still running `kept`
    body = registration(node.key, clock, miner_id="phoenix", **node.fields, running_task_ids=[kept])
    resp = await hub.http.post("/v1/miners/register", json=body)
    assert resp.status_code == 200, resp.text
    requeued = await status(hub, user, lost)
    assert (requeued["status"], requeued["attempts"]) == ("queued", 1)  # at once, not after the grace
    assert (await status(hub, user, kept))["status"] == "running"
    unknown = registration(node.key, clock, miner_id="phoenix", **node.fields, running_task_ids=["x" * 65])
    assert (await hub.http.post("/v1/miners/register", json=unknown)).status_code == 422


async def test_a_socket_that_reconnects_lists_its_tasks_and_the_others_are_requeued(
    hub: LiveHub, clock: FakeClock
) -> None:
    user = await hub.make_user("reconnect", balance=10_000_000)
    node = SimNode(hub, clock, "flaky")
    await node.connect()
    task_id = await submit(hub, user, max_attempts=2)
    await node.command("assign")
    await node.run_for(10)
    await node.ws.close()
    node.running.clear()  # the process restarted: it runs nothing now
    node.inbox.clear()
    await node.connect()  # a new session, whose first heartbeat lists nothing
    again = await node.command("assign")  # requeued at once, and given to the only node there is
    assert again["task"]["task_id"] == task_id
    assert (await status(hub, user, task_id))["attempts"] == 2
    await node.ws.close()


async def test_running_task_ids_is_bounded(hub: LiveHub, clock: FakeClock) -> None:
    node = SimNode(hub, clock, "bounded")
    body = registration(node.key, clock, miner_id="bounded", **node.fields, running_task_ids=["t"] * 1025)
    assert (await hub.http.post("/v1/miners/register", json=body)).status_code == 422
    body = registration(node.key, clock, miner_id="bounded", **node.fields, running_task_ids="t1")
    resp = await hub.http.post("/v1/miners/register", json=body)
    assert resp.status_code == 422 and isinstance(resp, httpx.Response)
