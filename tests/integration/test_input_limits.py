"""Every string and the whole task spec are bounded: an oversized task is refused before it is held,
queued or kept in memory, and a heartbeat socket refuses frames too big or too deeply nested."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
import websockets

from gpupool.bounds import MAX_TASK_SPEC_BYTES, MAX_WS_FRAME_BYTES
from gpupool.core.ports import FakeClock
from tests.conftest import HubClient, LiveHub
from tests.simnode import SimNode
from tests.unit.test_bundles import tar_gz

TASK = {"command": ["echo", "hi"], "max_price_micro_per_ksec": 1, "timeout_sec": 10}


async def _nothing_held(client: HubClient, user: dict[str, str]) -> None:
    assert (await client.http.get("/v1/tasks", headers=user)).json() == []
    assert (await client.http.get("/v1/balance", headers=user)).json()["held"] == 0


async def test_a_10_mb_command_is_refused_and_holds_nothing(hub_client: HubClient) -> None:
    user = await hub_client.make_user("mallory", balance=10_000_000)
    huge = {**TASK, "command": ["echo", "x" * 10_000_000]}
    resp = await hub_client.http.post("/v1/tasks", json=huge, headers=user)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "payload_too_large"
    # the same, as the multipart form that carries a bundle
    files = {"spec": (None, json.dumps(huge)), "bundle": ("b.tar.gz", b"\x1f\x8b", "application/gzip")}
    resp = await hub_client.http.post("/v1/tasks", files=files, headers=user)
    assert resp.status_code in (400, 413), resp.text
    just_over = {**TASK, "name": "n" * 100, "env": {f"K{i}": "v" * 7000 for i in range(10)}}
    assert len(json.dumps(just_over)) > MAX_TASK_SPEC_BYTES
    assert (await hub_client.http.post("/v1/tasks", json=just_over, headers=user)).status_code == 413
    await _nothing_held(hub_client, user)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"command": ["x" * 8193]}, "command.0"),
        ({"command": ["a"] * 257}, "command"),
        ({"env": {"K": "v" * 8193}}, "env.K"),
        (
            {"env": {"K" * 257: "v"}},
            "env.KKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKK",
        ),
        ({"requirements": {"tags_any": ["t" * 129]}}, "requirements.tags_any.0"),
        ({"requirements": {"min_vram_gb": 1e300}}, "requirements.min_vram_gb"),
    ],
)
async def test_each_string_and_count_has_a_limit(
    hub_client: HubClient, over: dict[str, object], field: str
) -> None:
    user = await hub_client.make_user("trudy", balance=10_000_000)
    resp = await hub_client.http.post("/v1/tasks", json={**TASK, **over}, headers=user)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["details"]["field"].startswith(field[:40]), resp.text
    await _nothing_held(hub_client, user)


async def test_a_task_at_the_limits_is_accepted(hub_client: HubClient) -> None:
    user = await hub_client.make_user("olive", balance=10_000_000)
    body = {**TASK, "command": ["x" * 8192] * 6, "env": {"K" * 256: "v" * 8192}}
    assert len(json.dumps(body)) < MAX_TASK_SPEC_BYTES
    resp = await hub_client.http.post("/v1/tasks", json=body, headers=user)
    assert resp.status_code == 201, resp.text


@pytest.fixture
async def hub(live_hub_factory: Callable[..., Awaitable[LiveHub]]) -> LiveHub:
    return await live_hub_factory()


async def test_heartbeat_socket_refuses_deep_and_oversized_frames(hub: LiveHub, clock: FakeClock) -> None:
    node = SimNode(hub, clock, "gpu-limits")
    await node.connect()
    await node.command("ack")
    await node.ws.send("[" * 100_000 + "]" * 100_000)  # deeper than Python's json can even parse
    assert (await node.command("error"))["code"] == "invalid_input"
    await node.ws.send(json.dumps({"type": "result", "result": deep(40)}))
    assert "nests deeper" in (await node.command("error"))["message"]
    await node.beat()  # the socket is still usable after a refused message
    await node.command("ack")
    await node.ws.send(json.dumps({"queue_len": 0, "pad": "x" * (MAX_WS_FRAME_BYTES + 1)}))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await node.command("ack")
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_a_bundle_bomb_is_refused_at_upload_and_nothing_is_kept(
    hub_client_factory: Callable[..., Awaitable[HubClient]],
) -> None:
    client = await hub_client_factory(max_bundle_unpacked_bytes=8 * 2**20, max_bundle_files=100)
    user = await client.make_user("bomber", balance=10_000_000)
    bomb = tar_gz({"run.sh": 10, "zeros.bin": 64 * 2**20})  # 8x the cap, from under a megabyte
    assert len(bomb) < 2**20
    for bundle in (bomb, tar_gz({f"f{i}": 0 for i in range(101)})):
        files = {"spec": (None, json.dumps(TASK)), "bundle": ("b.tar.gz", bundle, "application/gzip")}
        resp = await client.http.post("/v1/tasks", files=files, headers=user)
        assert resp.status_code == 413, resp.text
        assert resp.json()["error"]["details"]["field"] == "bundle"
    files = {"spec": (None, json.dumps(TASK)), "bundle": ("b.tar.gz", b"garbage" * 99, "application/gzip")}
    assert (await client.http.post("/v1/tasks", files=files, headers=user)).status_code == 422
    await _nothing_held(client, user)
    root = client.hub.tasks.files.root
    assert [p for p in root.rglob("*") if p.is_file()] == []
    ok = {
        "spec": (None, json.dumps(TASK)),
        "bundle": ("b.tar.gz", tar_gz({"run.sh": 10}), "application/gzip"),
    }
    assert (await client.http.post("/v1/tasks", files=ok, headers=user)).status_code == 201


async def test_a_result_that_is_not_json_or_nests_too_deep_is_422(hub: LiveHub, clock: FakeClock) -> None:
    user = await hub.make_user("nester", balance=10**12)
    node = SimNode(hub, clock, "gpu-nest")
    await node.connect()
    resp = await hub.http.post(
        "/v1/tasks", json={**TASK, "max_price_micro_per_ksec": 3_000_000}, headers=user
    )
    task_id = resp.json()["task_id"]
    await node.command("assign")
    session = {"X-Session-Token": node.token, "Content-Type": "application/json"}
    for body in (
        b"not json",
        b"[" * 50_000 + b"]" * 50_000,
        json.dumps({"task_id": task_id, "usage": deep(40)}),
    ):
        resp = await hub.http.post(f"/v1/tasks/{task_id}/result", content=body, headers=session)
        assert resp.status_code == 422 and resp.json()["error"]["details"]["field"] == "body", resp.text
    await node.ws.close()


def deep(levels: int) -> object:
    value: object = {"queue_len": 0}
    for _ in range(levels):
        value = {"x": value}
    return value
