"""Numbers out of any column's range are a 422 naming the field, never a 500 (SQLite and PostgreSQL).

Each case is one an attacker tried: a signed event from the year 10^400, a page past BIGINT, an output
sequence number of 2^64, an exit code too wide for an int4 column, usage whose score overflows BIGINT.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gpupool import crypto
from gpupool.core.ports import FakeClock
from tests.conftest import HubClient, LiveHub
from tests.factories import registration
from tests.simnode import SimNode


def assert_field_422(resp: Any, field: str) -> None:
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["details"]["field"] == field, resp.text


async def test_signed_event_from_the_far_future_is_refused_without_an_account(
    hub_client: HubClient, clock: FakeClock
) -> None:
    key = crypto.KeyPair.generate()
    body = registration(key, clock)
    body.pop(crypto.SIG_FIELD)
    for created_at in (10**400, 2**64, -1):
        signed = crypto.sign_body(key, crypto.KIND_REGISTRATION, body, created_at=created_at)
        resp = await hub_client.http.post("/v1/miners/register", json=signed)
        assert_field_422(resp, f"{crypto.SIG_FIELD}.created_at")
    # the same body signed now still registers
    signed = crypto.sign_body(key, crypto.KIND_REGISTRATION, body, created_at=int(clock.now()))
    assert (await hub_client.http.post("/v1/miners/register", json=signed)).status_code == 200


async def test_listing_cursors_and_pages_past_bigint_are_422(hub_client: HubClient) -> None:
    user = await hub_client.make_user("carol")
    admin = await hub_client.admin_headers()
    assert_field_422(await hub_client.http.get(f"/v1/transfers?before={2**63}", headers=user), "before")
    assert (await hub_client.http.get(f"/v1/transfers?before={2**53 - 1}", headers=user)).status_code == 200
    for path in ("/v1/miners", "/v1/admin/workers"):
        assert_field_422(await hub_client.http.get(f"{path}?page={2**62}", headers=admin), "page")
        assert (await hub_client.http.get(f"{path}?page=1000", headers=admin)).status_code == 200
    assert_field_422(await hub_client.http.get("/v1/tasks?before=1e400", headers=user), "before")


@pytest.fixture
async def hub(live_hub_factory: Callable[..., Awaitable[LiveHub]]) -> LiveHub:
    return await live_hub_factory()


async def _running(hub: LiveHub, clock: FakeClock) -> tuple[SimNode, str]:
    user = await hub.make_user("dave", balance=10**12)
    node = SimNode(hub, clock, "gpu-big")
    await node.connect()
    body = {"command": ["true"], "max_price_micro_per_ksec": 3_000_000, "timeout_sec": 1000}
    resp = await hub.http.post("/v1/tasks", json=body, headers=user)
    assert resp.status_code == 201, resp.text
    await node.command("assign")
    return node, resp.json()["task_id"]


async def test_node_reports_out_of_range_are_422(hub: LiveHub, clock: FakeClock) -> None:
    node, task_id = await _running(hub, clock)
    assert_field_422(await node.output(task_id, 2**64, "x"), "seq")
    assert (await node.output(task_id, 2**53 - 1, "x")).status_code == 200  # JSON's exact range
    for exit_code in (2**70, 2**40, -(2**31) - 1):
        assert_field_422(await node.result(task_id, exit_code=exit_code, files={}), "exit_code")
    for gpu_seconds in (1e16, 1e300):
        assert_field_422(await node.result(task_id, gpu_seconds=gpu_seconds, files={}), "usage.gpu_seconds")
    # none of the refused reports ended the task; a sane one still settles it
    done = await node.result(task_id, exit_code=2**31 - 1, gpu_seconds=10.0, files={})
    assert done.status_code == 200, done.text
    assert done.json()["exit_code"] == 2**31 - 1 and done.json()["status"] == "failed"
    await node.ws.close()


async def test_out_of_range_result_on_the_socket_is_acked_422(hub: LiveHub, clock: FakeClock) -> None:
    node, task_id = await _running(hub, clock)
    ack = await node.result_on_socket(task_id, gpu_seconds=1e16)
    assert ack["status"] == 422 and ack["code"] == "invalid_input"
    await node.ws.close()
