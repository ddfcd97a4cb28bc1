"""The seed-002 checklist over the real app: heartbeats, expiry, match, rate limits, feedback, metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import httpx
import pytest
import websockets

from gpupool import crypto
from gpupool.core.ports import FakeClock
from tests.conftest import HubClient, LiveHub
from tests.factories import gpu, registration

COORDINATOR_SECRET = "coordinator-secret-for-tests-0123456789"

# Three miners with mixed VRAM, price and region (seed 002's checklist).
MINERS = {
    "m-a100": {
        "gpus": [gpu(0, 40.0, "NVIDIA A100-SXM4-40GB")],
        "price_micro_per_ksec": 400_000,
        "region": "us-east",
    },
    "m-h100": {"gpus": [gpu(0), gpu(1)], "price_micro_per_ksec": 1_200_000, "region": "eu-west"},
    "m-4090": {
        "gpus": [gpu(0, 24.0, "NVIDIA GeForce RTX 4090")],
        "price_micro_per_ksec": 150_000,
        "region": "eu-west",
    },
}


async def register_three(client: HubClient, clock: FakeClock) -> dict[str, str]:
    tokens = {}
    for miner_id, fields in MINERS.items():
        body = registration(crypto.KeyPair.generate(), clock, miner_id=miner_id, **fields)
        resp = await client.http.post("/v1/miners/register", json=body)
        assert resp.status_code == 200, resp.text
        tokens[miner_id] = resp.json()["session_token"]
    return tokens


def secret() -> dict[str, str]:
    return {"X-Coordinator-Secret": COORDINATOR_SECRET}


async def match(client: HubClient, job_id: str, **body: object) -> httpx.Response:
    return await client.http.post("/v1/match", json={"job_id": job_id, **body}, headers=secret())


@pytest.fixture
async def hub(hub_client_factory: Callable[..., Awaitable[HubClient]]) -> HubClient:
    return await hub_client_factory(coordinator_shared_secret=COORDINATOR_SECRET, rate_limit="1000/second")


async def test_match_with_constraints_returns_consistent_top_k_with_explain(
    hub: HubClient, clock: FakeClock
) -> None:
    await register_three(hub, clock)
    resp = await match(hub, "job-1", requirements={"min_vram_gb": 30}, top_k=2)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    ids = [c["miner_id"] for c in out["candidates"]]
    assert set(ids) == {"m-a100", "m-h100"} and len(ids) == 2
    assert out["rejected"] == {"vram": 1}
    scores = [c["score"] for c in out["candidates"]]
    assert scores == sorted(scores, reverse=True)
    assert ids[0] in out["explain"] and "price" in out["explain"] and "trust" in out["explain"]
    # The same question gives the same answer.
    assert (await match(hub, "job-1b", requirements={"min_vram_gb": 30}, top_k=2)).json()[
        "candidates"
    ] == out["candidates"]

    by_region = (await match(hub, "job-2", hints={"region": "eu-west", "max_price_micro": 1_000_000})).json()
    assert [c["miner_id"] for c in by_region["candidates"]] == ["m-4090"]
    assert by_region["rejected"] == {"region": 1, "price": 1}

    two_gpus = (await match(hub, "job-3", requirements={"gpu_count": 2, "accel": ["h100"]})).json()
    assert [c["miner_id"] for c in two_gpus["candidates"]] == ["m-h100"]

    none = (await match(hub, "job-4", requirements={"min_vram_gb": 200})).json()
    assert none["candidates"] == [] and none["rejected"] == {"vram": 3} and none["explain"]


async def test_match_requires_a_coordinator(hub: HubClient, clock: FakeClock) -> None:
    await register_three(hub, clock)
    body = {"job_id": "j"}
    assert (await hub.http.post("/v1/match", json=body)).status_code == 401
    wrong = await hub.http.post("/v1/match", json=body, headers={"X-Coordinator-Secret": "guess"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "bad_coordinator_secret"
    user = await hub.make_user("ursula")
    assert (await hub.http.post("/v1/match", json=body, headers=user)).status_code == 403
    coordinator = await hub.make_user("cora", role="coordinator")
    assert (await hub.http.post("/v1/match", json=body, headers=coordinator)).status_code == 200
    bad = await hub.http.post("/v1/match", json={"job_id": "j", "top_k": 0}, headers=secret())
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "top_k"


async def test_feedback_shifts_trust_and_ranking_once_per_job(hub: HubClient, clock: FakeClock) -> None:
    await register_three(hub, clock)
    for twin in ("twin-a", "twin-b"):  # identical nodes: only trust can separate them
        body = registration(crypto.KeyPair.generate(), clock, miner_id=twin, tags=["twin"])
        assert (await hub.http.post("/v1/miners/register", json=body)).status_code == 200
    twins = {"tags_any": ["twin"]}
    first = (await match(hub, "job-f", requirements=twins)).json()["candidates"]
    assert [c["miner_id"] for c in first] == ["twin-a", "twin-b"]  # a tie, broken by id
    leader = "twin-a"
    trust_before = hub.hub.live.nodes[leader].record.trust

    resp = await hub.http.post(
        "/v1/feedback",
        json={"job_id": "job-f", "miner_id": leader, "outcome": "failed", "latency_ms": 5000},
        headers=secret(),
    )
    assert resp.status_code == 200 and resp.json()["applied"] is True
    assert resp.json()["trust"] == pytest.approx(trust_before * 0.7)
    after = (await match(hub, "job-g", requirements=twins)).json()["candidates"]
    assert [c["miner_id"] for c in after] == ["twin-b", "twin-a"]

    # Completed jobs win the trust back only slowly: a few are not enough.
    for i in range(5):
        await match(hub, f"job-ok-{i}", requirements=twins)
        ok = {"job_id": f"job-ok-{i}", "miner_id": leader, "outcome": "completed"}
        assert (await hub.http.post("/v1/feedback", json=ok, headers=secret())).json()["applied"] is True
    assert hub.hub.live.nodes[leader].record.trust < trust_before
    assert (await match(hub, "job-h", requirements=twins)).json()["candidates"][0]["miner_id"] == "twin-b"

    # The same (job, node) outcome counts once; a node never offered for the job cannot be rated.
    again = await hub.http.post(
        "/v1/feedback", json={"job_id": "job-f", "miner_id": leader, "outcome": "completed"}, headers=secret()
    )
    assert again.status_code == 200 and again.json()["applied"] is False
    stranger = await hub.http.post(
        "/v1/feedback",
        json={"job_id": "job-g", "miner_id": "m-4090", "outcome": "completed"},
        headers=secret(),
    )
    assert stranger.status_code == 404
    # Persisted: the stored trust equals the live one.
    admin = await hub.admin_headers()
    stored = (await hub.http.get(f"/v1/miners/{leader}", headers=admin)).json()
    assert stored["trust"] == pytest.approx(hub.hub.live.nodes[leader].record.trust)


async def test_a_node_cannot_rate_itself(hub: HubClient, clock: FakeClock) -> None:
    tokens = await register_three(hub, clock)
    await match(hub, "job-self")
    body = {"job_id": "job-self", "miner_id": "m-4090", "outcome": "completed"}
    as_node = await hub.http.post(
        "/v1/feedback", json=body, headers={"Authorization": f"Bearer {tokens['m-4090']}"}
    )
    assert as_node.status_code == 401
    user = await hub.make_user("nodeowner")
    assert (await hub.http.post("/v1/feedback", json=body, headers=user)).status_code == 403


async def test_flood_of_match_above_50_rps_gets_429_with_retry_after(
    hub_client_factory: Callable[..., Awaitable[HubClient]], clock: FakeClock
) -> None:
    client = await hub_client_factory(coordinator_shared_secret=COORDINATOR_SECRET)  # default 50/second
    await register_three(client, clock)
    responses = await asyncio.gather(*(match(client, f"flood-{i}") for i in range(200)))
    codes = [r.status_code for r in responses]
    assert set(codes) == {200, 429} and codes.count(200) < 200
    limited = next(r for r in responses if r.status_code == 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"


async def test_rate_limit_counts_exactly_per_client_and_route(
    hub_client_factory: Callable[..., Awaitable[HubClient]], clock: FakeClock
) -> None:
    # A one-minute window makes the count exact whatever the machine's speed.
    client = await hub_client_factory(coordinator_shared_secret=COORDINATOR_SECRET, rate_limit="50/minute")
    await register_three(client, clock)
    codes = [r.status_code for r in await asyncio.gather(*(match(client, f"x-{i}") for i in range(80)))]
    assert codes.count(200) == 50 and codes.count(429) == 30
    # Registration has its own budget: the flood of matches did not use it up.
    body = registration(crypto.KeyPair.generate(), clock)
    assert (await client.http.post("/v1/miners/register", json=body)).status_code == 200


async def test_rate_limit_is_shared_through_redis(
    hub_client_factory: Callable[..., Awaitable[HubClient]], clock: FakeClock, redis_url: str
) -> None:
    limits = {
        "coordinator_shared_secret": COORDINATOR_SECRET,
        "redis_url": redis_url,
        "rate_limit": "50/minute",
    }
    one = await hub_client_factory(**limits)
    two = await hub_client_factory(**limits)  # a second replica: the budget is the pool's, not the replica's
    await register_three(one, clock)
    codes = [r.status_code for r in await asyncio.gather(*(match(one, f"r1-{i}") for i in range(30)))]
    codes += [r.status_code for r in await asyncio.gather(*(match(two, f"r2-{i}") for i in range(30)))]
    assert codes.count(200) == 50 and codes.count(429) == 10


async def test_heartbeats_over_websocket_and_stale_node_drops(
    live_hub_factory: Callable[..., Awaitable[LiveHub]], clock: FakeClock
) -> None:
    hub = await live_hub_factory(coordinator_shared_secret=COORDINATOR_SECRET)
    tokens = await register_three(hub, clock)
    telemetry = {"ts": clock.now(), "queue_len": 1, "gpus": [{"index": 0, "util_pct": 97.0, "temp_c": 61}]}
    sockets = {}
    for miner_id in ("m-a100", "m-h100"):
        ws = await websockets.connect(f"{hub.ws_url}/v1/miners/heartbeat?session_token={tokens[miner_id]}")
        await ws.send(json.dumps(telemetry))
        assert json.loads(await ws.recv())["type"] == "ack"
        sockets[miner_id] = ws

    clock.advance(31)  # past HEARTBEAT_GRACE_SEC for everyone...
    for ws in sockets.values():  # ...but two of them keep heartbeating
        await ws.send(json.dumps({**telemetry, "ts": clock.now()}))
        assert json.loads(await ws.recv())["type"] == "ack"
    assert await hub.hub.expire() == ["m-4090"]
    await hub.hub.live.flush()

    admin = await hub.admin_headers()
    nodes = {m["miner_id"]: m for m in (await hub.http.get("/v1/miners", headers=admin)).json()["items"]}
    assert nodes["m-4090"]["status"] == "offline"
    assert (
        nodes["m-a100"]["status"] == "online" and nodes["m-a100"]["telemetry"]["gpus"][0]["util_pct"] == 97.0
    )
    offline = (await hub.http.get("/v1/miners?status=offline", headers=admin)).json()
    assert [m["miner_id"] for m in offline["items"]] == ["m-4090"]
    assert [c["miner_id"] for c in (await match(hub, "after-expiry", top_k=5)).json()["candidates"]].count(
        "m-4090"
    ) == 0
    metrics = (await hub.http.get("/metrics")).text
    assert "poolhub_miners_online 2.0" in metrics
    assert "poolhub_match_latency_ms_bucket" in metrics
    assert (
        "poolhub_heartbeats_total" in metrics
        and 'poolhub_registrations_total{outcome="accepted"} 3.0' in metrics
    )

    # A bad message is answered with an error and the channel stays open.
    ws = sockets["m-a100"]
    await ws.send("{not json")
    assert json.loads(await ws.recv())["code"] == "invalid_input"
    await ws.send(json.dumps(telemetry))
    assert json.loads(await ws.recv())["type"] == "ack"
    for ws in sockets.values():
        await ws.close()


async def test_heartbeat_socket_refuses_unknown_session(
    live_hub_factory: Callable[..., Awaitable[LiveHub]], clock: FakeClock
) -> None:
    hub = await live_hub_factory()
    ws = await websockets.connect(f"{hub.ws_url}/v1/miners/heartbeat?session_token=gps_forged")
    with pytest.raises(websockets.ConnectionClosed) as info:
        await ws.recv()
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 4401 and info.value.rcvd.reason == "session_invalid"
