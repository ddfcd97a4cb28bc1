"""AITBC's pool hub wire (seed 002), replayed as its real clients send it.

The bodies and headers below are those of ``apps/miner/production_miner.py`` (oib/AITBC):
``build_pool_hub_register_data`` (unsigned, ``api_key`` in the body, ``Content-Type`` only) and
``send_pool_hub_heartbeat`` (``Authorization: Bearer <MINER_AUTH_TOKEN>``); the responses are checked
against its pool hub's ``routers/miners.py``, ``routers/health.py``, ``routers/sla.py`` and
``schemas.py``. The seed-era HTTP tests are ``apps/pool-hub/tests/test_api.py`` (b8b6406).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import text

from gpupool import crypto
from gpupool.core.ports import FakeClock
from tests.conftest import HubClient
from tests.factories import gpu, registration

HubFactory = Callable[..., Awaitable[HubClient]]
JSON = {"Content-Type": "application/json"}


def miner_register_body(api_key: str, miner_id: str = "miner-4090") -> dict[str, Any]:
    """``build_pool_hub_register_data()`` on a host with one RTX 4090 (nvidia-smi memory in MiB)."""
    return {
        "miner_id": miner_id,
        "api_key": api_key,
        "addr": "http://10.0.0.9:8101",
        "proto": "http",
        "gpu_vram_gb": 24564 / 1024,
        "gpu_name": "NVIDIA GeForce RTX 4090",
        "cpu_cores": 16,
        "ram_gb": 16.0,
        "max_parallel": 1,
        "base_price": str(0.01),
        "tags": {"platform": "CUDA", "cuda": "12.2"},
        "capabilities": ["inference", "training", "stable-diffusion", "llama", "transcribe", "reencode"],
        "region": "localhost",
    }


def heartbeat_body() -> dict[str, Any]:
    """``build_pool_hub_heartbeat_data()`` with a GPU present."""
    return {
        "status": "active",
        "current_jobs": 0,
        "gpu_utilization": 37,
        "memory_used": 2048,
        "memory_total": 24564,
        "network_latency_ms": 12.5,
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **JSON}


async def own_key(client: HubClient, user: dict[str, str], **body: Any) -> dict[str, Any]:
    resp = await client.http.post("/v1/api-keys", json=body, headers=user)
    assert resp.status_code == 201, resp.text
    out: dict[str, Any] = resp.json()
    return out


async def test_owners_make_list_and_revoke_their_own_keys_shown_once_and_stored_hashed(
    hub_client: HubClient,
) -> None:
    alice = await hub_client.make_user("alice")
    bob = await hub_client.make_user("bob")
    made = await own_key(hub_client, alice, name="rig-1")
    assert set(made) >= {"id", "key", "owner", "name", "created_at"}
    assert made["owner"] == "user:alice" and made["name"] == "rig-1" and made["key"].startswith("gpk_")
    listed = (await hub_client.http.get("/v1/api-keys", headers=alice)).json()
    assert [k["id"] for k in listed] == [made["id"]] and listed[0]["key"] is None
    assert (await hub_client.http.get("/v1/api-keys", headers=bob)).json() == []
    async with hub_client.hub.db.read() as conn:
        stored = (await conn.execute(text("SELECT key_hash FROM owner_api_keys"))).scalars().all()
    assert made["key"] not in stored and len(stored[0]) == 64
    # Another user's account is not one's to name; an owner address is.
    refused = await hub_client.http.post("/v1/api-keys", json={"owner": "user:bob"}, headers=alice)
    assert refused.status_code == 403
    paid = await own_key(hub_client, alice, owner="0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
    assert paid["owner"] == "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    assert (await hub_client.http.delete(f"/v1/api-keys/{made['id']}", headers=bob)).status_code == 404
    assert (await hub_client.http.delete(f"/v1/api-keys/{made['id']}", headers=alice)).status_code == 204
    body = miner_register_body(made["key"])
    assert (await hub_client.http.post("/v1/miners/register", json=body, headers=JSON)).status_code == 401


async def test_the_miners_registration_and_heartbeat_work_as_sent(hub_client: HubClient) -> None:
    alice = await hub_client.make_user("alice")
    key = (await own_key(hub_client, alice))["key"]
    resp = await hub_client.http.post("/v1/miners/register", json=miner_register_body(key), headers=JSON)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    # AITBC's pool hub answers {"success": True, "miner_id": …, "created": True}; SPEC §8.2 adds the lease.
    assert out["success"] is True and out["miner_id"] == "miner-4090" and out["created"] is True
    assert out["status"] == "online" and out["session_token"] and isinstance(out["lease_ttl_sec"], int)
    assert isinstance(out["next_heartbeat_sec"], float)
    again = await hub_client.http.post("/v1/miners/register", json=miner_register_body(key), headers=JSON)
    assert again.json()["created"] is False

    beat = await hub_client.http.post("/v1/miners/heartbeat", json=heartbeat_body(), headers=bearer(key))
    assert beat.status_code == 200, beat.text
    assert beat.json()["success"] is True and beat.json()["miner_id"] == "miner-4090"
    by_session = await hub_client.http.post(
        "/v1/miners/heartbeat", json=heartbeat_body(), headers=bearer(again.json()["session_token"])
    )
    assert by_session.status_code == 200 and by_session.json()["miner_id"] == "miner-4090"
    wrong = await hub_client.http.post("/v1/miners/heartbeat", json=heartbeat_body(), headers=bearer("nope"))
    assert wrong.status_code == 401
    assert (await hub_client.http.post("/v1/miners/heartbeat", json=heartbeat_body())).status_code == 401

    own = (await hub_client.http.get("/v1/miners/status", headers=bearer(key))).json()
    assert own["miner_id"] == "miner-4090" and own["addr"] == "http://10.0.0.9:8101"
    assert own["capabilities"][0] == "inference" and datetime.fromisoformat(own["last_seen_at"])
    view = (
        await hub_client.http.get("/v1/miners/miner-4090", headers=await hub_client.admin_headers())
    ).json()
    assert view["identity"] == "api_key" and view["pubkey"] is None and view["owner"] == "user:alice"
    assert view["price_token_per_ksec"] == 0.01 and view["price_micro_per_ksec"] == 10_000
    assert view["gpus"][0]["vram_gb"] == pytest.approx(23.988, abs=1e-3)
    assert set(view["tags"]) == {"CUDA", "12.2"}
    assert view["telemetry"]["gpus"][0]["util_pct"] == 37


async def test_bad_registrations_are_4xx(hub_client: HubClient) -> None:
    alice = await hub_client.make_user("alice")
    key = (await own_key(hub_client, alice))["key"]
    for field, value in (
        ("base_price", "0.0000001"),
        ("base_price", "free"),
        ("max_parallel", 0),
        ("miner_id", "a b"),
        ("gpu_vram_gb", -1),
    ):
        body = {**miner_register_body(key), field: value}
        resp = await hub_client.http.post("/v1/miners/register", json=body, headers=JSON)
        assert resp.status_code == 422, (field, resp.text)
        assert resp.json()["error"]["details"]["field"] == field
    unknown = await hub_client.http.post(
        "/v1/miners/register", json=miner_register_body("gpk_x"), headers=JSON
    )
    assert unknown.status_code == 401
    not_json = await hub_client.http.post("/v1/miners/register", content=b"[1]", headers=JSON)
    assert not_json.status_code == 422


async def test_allowlist_mode_keeps_a_self_made_keys_miner_pending_and_an_admin_key_admits(
    hub_client_factory: HubFactory,
) -> None:
    client = await hub_client_factory(registry_mode="allowlist")
    alice = await client.make_user("alice")
    key = (await own_key(client, alice))["key"]
    out = (await client.http.post("/v1/miners/register", json=miner_register_body(key), headers=JSON)).json()
    assert out["status"] == "pending"
    admin = await client.admin_headers()
    issued = await client.http.post(
        "/v1/admin/api-keys", json={"owner": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"}, headers=admin
    )
    body = miner_register_body(issued.json()["key"], miner_id="admitted")
    assert (await client.http.post("/v1/miners/register", json=body, headers=JSON)).json()[
        "status"
    ] == "online"


async def test_health_and_sla_status_answer_the_cli(hub_client_factory: HubFactory, redis_url: str) -> None:
    client = await hub_client_factory(redis_url=redis_url)
    health = await client.http.get("/health")
    assert health.status_code == 200
    body = health.json()
    # HealthResponse of AITBC's pool hub, then SPEC §8.2's additions.
    assert body["status"] == "ok" and body["db"] is True and body["redis"] is True
    assert body["miners_online"] == 0 and body["db_error"] is None and body["redis_error"] is None
    assert body["online_miners"] == 0 and body["version"] and datetime.fromisoformat(body["timestamp"])
    sla = (await client.http.get("/v1/sla/status")).json()
    assert {"status", "active_violations", "recent_metrics_count", "timestamp"} <= set(sla)
    assert {"uptime_sec", "match_latency_ms", "miners_online"} <= set(sla)


async def test_health_is_degraded_when_redis_is_down(hub_client_factory: HubFactory) -> None:
    client = await hub_client_factory(redis_url="redis://127.0.0.1:1/0")
    resp = await client.http.get("/health")
    assert resp.status_code == 503
    assert (
        resp.json()["status"] == "degraded" and resp.json()["redis"] is False and resp.json()["redis_error"]
    )


# -- seed-era HTTP tests (apps/pool-hub/tests/test_api.py), their requests as sent: no credentials -------


@pytest.fixture
async def coordinator_network_hub(hub_client_factory: HubFactory) -> HubClient:
    """The seed's deployment: the coordinator reaches the pool hub from a trusted network."""
    return await hub_client_factory(coordinator_cidrs=["10.0.0.0/8"])


async def test_seed_era_match_endpoint(coordinator_network_hub: HubClient) -> None:
    client = coordinator_network_hub
    alice = await client.make_user("alice")
    key = (await own_key(client, alice))["key"]
    miner = {  # the miner test_match_endpoint puts in the registry
        "miner_id": "miner-1",
        "api_key": key,
        "addr": "127.0.0.1",
        "proto": "grpc",
        "gpu_vram_gb": 16,
        "gpu_name": "A100",
        "cpu_cores": 32,
        "ram_gb": 128,
        "max_parallel": 4,
        "base_price": 0.8,
        "tags": {"tier": "gold"},
        "capabilities": ["embedding"],
        "region": "eu",
    }
    assert (await client.http.post("/v1/miners/register", json=miner)).status_code == 200
    response = await client.http.post(
        "/v1/match",
        json={"job_id": "job-123", "requirements": {"min_vram_gb": 8}, "hints": {"region": "eu"}, "top_k": 1},
    )
    assert response.status_code == 200
    payload = response.json()
    assert payload["job_id"] == "job-123"
    assert len(payload["candidates"]) == 1


async def test_seed_era_match_endpoint_no_miners(coordinator_network_hub: HubClient) -> None:
    response = await coordinator_network_hub.http.post(
        "/v1/match", json={"job_id": "empty", "requirements": {}, "hints": {}, "top_k": 2}
    )
    assert response.status_code == 200
    assert response.json()["candidates"] == []


async def test_seed_era_health_endpoint(coordinator_network_hub: HubClient) -> None:
    response = await coordinator_network_hub.http.get("/v1/health")
    assert response.status_code == 200
    data = response.json()
    assert data["status"] in {"ok", "degraded"}
    assert "db_error" in data
    assert "redis_error" in data


async def test_seed_era_metrics_endpoint(coordinator_network_hub: HubClient) -> None:
    client = coordinator_network_hub
    before = _extract_counter((await client.http.get("/metrics")).text, "poolhub_match_requests_total")
    for i in range(2):
        await client.http.post(
            "/v1/match", json={"job_id": f"j{i}", "requirements": {}, "hints": {}, "top_k": 1}
        )
    text_ = (await client.http.get("/metrics")).text
    assert _extract_counter(text_, "poolhub_match_requests_total") >= before + 2
    assert "poolhub_match_latency_seconds_bucket" in text_ and "poolhub_match_latency_ms_bucket" in text_


def _extract_counter(metrics_text: str, metric: str) -> float:
    """As the seed's test reads it: the first line starting with the name."""
    for line in metrics_text.splitlines():
        if line.startswith(metric):
            return float(line.split()[1])
    return 0.0


async def test_without_a_trusted_network_match_still_needs_a_credential(hub_client: HubClient) -> None:
    resp = await hub_client.http.post("/v1/match", json={"job_id": "j", "top_k": 1})
    assert resp.status_code == 401


# -- seed 002's own /v1/match example, on a node that fits it -------------------------------------------

SEED_MATCH = {
    "job_id": "uuid",
    "requirements": {
        "task": "image_embedding",
        "min_vram_gb": 8,
        "min_ram_gb": 8,
        "accel": ["cuda"],
        "tags_any": ["eu-west", "low-latency"],
        "capabilities_any": ["sentence-transformers/all-MiniLM-L6-v2"],
    },
    "hints": {"region": "eu", "max_price": 0.8, "deadline_ms": 5000},
    "top_k": 3,
}


async def test_seed_002_match_example_returns_the_node_that_fits_with_its_price_in_tokens(
    coordinator_network_hub: HubClient,
) -> None:
    client = coordinator_network_hub
    alice = await client.make_user("alice")
    key = (await own_key(client, alice))["key"]
    fits = {
        **miner_register_body(key, "fits"),
        "base_price": "0.75",
        "region": "eu-west-1",
        "tags": ["eu-west"],
        "capabilities": ["sentence-transformers/all-MiniLM-L6-v2"],
        "ram_gb": 32.0,
    }
    dear = {**fits, "miner_id": "dear", "base_price": "0.81"}
    for body in (fits, dear):
        assert (await client.http.post("/v1/miners/register", json=body)).status_code == 200
    resp = await client.http.post("/v1/match", json=SEED_MATCH)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert [c["miner_id"] for c in out["candidates"]] == ["fits"] and out["rejected"] == {"price": 1}
    best = out["candidates"][0]
    # The seed's candidate keys: miner_id, addr, proto, score, eta_ms, price (tokens), explain.
    assert best["price"] == 0.75 and best["price_micro"] == 750_000
    assert best["addr"] == "http://10.0.0.9:8101" and best["proto"] == "http"
    assert 0 < best["score"] <= 1 and best["eta_ms"] > 0 and best["explain"].startswith("score=")
    assert "cap" in out["explain"] and "trust" in out["explain"]
    as_string = await client.http.post("/v1/match", json={**SEED_MATCH, "hints": {"max_price": "0.8"}})
    assert [c["miner_id"] for c in as_string.json()["candidates"]] == ["fits"]
    too_fine = await client.http.post("/v1/match", json={**SEED_MATCH, "hints": {"max_price": 0.80000001}})
    assert too_fine.status_code == 422 and too_fine.json()["error"]["details"]["field"] == "hints.max_price"


# -- one pool: an AITBC miner beside a signed gpupool node -----------------------------------------------


async def test_an_aitbc_miner_and_a_signed_node_share_one_pool(
    coordinator_network_hub: HubClient, clock: FakeClock
) -> None:
    client = coordinator_network_hub
    alice = await client.make_user("alice")
    key = (await own_key(client, alice))["key"]
    body = {**miner_register_body(key, "aitbc-4090"), "region": "eu-west-1", "base_price": "0.5"}
    assert (await client.http.post("/v1/miners/register", json=body)).status_code == 200
    signed = registration(
        crypto.KeyPair.generate(), clock, miner_id="gp-h100", gpus=[gpu(0)], region="eu-west", tags=["cuda"]
    )
    token = (await client.http.post("/v1/miners/register", json=signed)).json()["session_token"]
    admin = await client.admin_headers()
    listed = (await client.http.get("/v1/miners", headers=admin)).json()["items"]
    assert {(m["miner_id"], m["identity"]) for m in listed} == {
        ("aitbc-4090", "api_key"),
        ("gp-h100", "signed"),
    }

    async def beat_both() -> None:
        assert (
            await client.http.post("/v1/miners/heartbeat", json=heartbeat_body(), headers=bearer(key))
        ).is_success
        assert (await client.http.get(f"/v1/miners/lease/renew?session_token={token}")).is_success

    await beat_both()
    job = {
        "job_id": "job-1",
        "requirements": {"accel": ["cuda"], "min_vram_gb": 16},
        "hints": {"region": "eu"},
    }
    ranked = (await client.http.post("/v1/match", json={**job, "top_k": 5})).json()["candidates"]
    assert {c["miner_id"] for c in ranked} == {"aitbc-4090", "gp-h100"}
    # The pool hub only matches: the coordinator dials the miner's own address.
    assert {c["miner_id"]: c["addr"] for c in ranked}["aitbc-4090"] == "http://10.0.0.9:8101"

    trust: dict[str, float] = {}
    for miner_id, outcome in (("aitbc-4090", "failed"), ("gp-h100", "completed")):
        fb = await client.http.post(
            "/v1/feedback",
            json={"job_id": "job-1", "miner_id": miner_id, "outcome": outcome, "latency_ms": 90},
        )
        assert fb.status_code == 200 and fb.json()["applied"], fb.text
        trust[miner_id] = fb.json()["trust"]
    assert trust["gp-h100"] > 0.5 > trust["aitbc-4090"]
    again = (await client.http.post("/v1/match", json={**job, "job_id": "job-2", "top_k": 5})).json()
    before = {c["miner_id"]: c["score"] for c in ranked}
    after = {c["miner_id"]: c["score"] for c in again["candidates"]}
    assert after["gp-h100"] > before["gp-h100"] and after["aitbc-4090"] < before["aitbc-4090"]

    # The AITBC miner goes silent; the signed node keeps beating: after the grace period only it is matched.
    clock.advance(20)
    assert (await client.http.get(f"/v1/miners/lease/renew?session_token={token}")).is_success
    clock.advance(15)
    assert await client.hub.expire() == ["aitbc-4090"]
    late = (await client.http.post("/v1/match", json={**job, "job_id": "job-3", "top_k": 5})).json()
    assert [c["miner_id"] for c in late["candidates"]] == ["gp-h100"] and late["rejected"] == {"offline": 1}
    # It comes back by heartbeating with its key.
    await beat_both()
    back = (await client.http.post("/v1/match", json={**job, "job_id": "job-4", "top_k": 5})).json()
    assert len(back["candidates"]) == 2
