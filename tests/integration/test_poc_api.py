"""PoC rounds on the hub (SPEC §3.6): signed batches in, sampled recomputation, weights and contributions.

Rounds use ``PARAMS_TINY`` so the hub's recomputation takes milliseconds; the honest distances come from
``core.poc.compute_distances`` (the same NumPy path a CPU node runs), forged ones are derived from them.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from gpupool import crypto
from gpupool.core.poc import DEFAULT_R_TARGET, PARAMS_TINY, compute_distances
from gpupool.core.ports import FakeClock
from tests.conftest import HubClient
from tests.factories import registration


async def register(hub: HubClient, clock: FakeClock, key: crypto.KeyPair) -> str:
    resp = await hub.http.post("/v1/miners/register", json=registration(key, clock))
    assert resp.status_code == 200, resp.text
    return str(resp.json()["miner_id"])


async def open_round(hub: HubClient, **fields: Any) -> dict[str, Any]:
    body = {"params_name": "tiny", **fields}
    resp = await hub.http.post("/v1/admin/poc/rounds", json=body, headers=await hub.admin_headers())
    assert resp.status_code == 201, resp.text
    out: dict[str, Any] = resp.json()
    return out


def qualifying(
    rnd: dict[str, Any], public_key: str, candidates: Sequence[int]
) -> tuple[list[int], list[float]]:
    """The candidates that qualify for ``public_key`` in the round, with their honest distances."""
    dist = compute_distances(rnd["block_hash"], public_key, list(candidates), PARAMS_TINY)
    keep = [(n, float(d)) for n, d in zip(candidates, dist, strict=True) if d < rnd["r_target"]]
    return [n for n, _ in keep], [d for _, d in keep]


def signed_batch(
    key: crypto.KeyPair,
    clock: FakeClock,
    rnd: dict[str, Any],
    nonces: Sequence[int],
    dist: Sequence[float],
    *,
    public_key: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "public_key": public_key or key.pubkey,
        "block_hash": rnd["block_hash"],
        "block_height": rnd["block_height"],
        "node_id": 0,
        "nonces": list(nonces),
        "dist": list(dist),
        **fields,
    }
    return crypto.sign_body(key, crypto.KIND_POC_BATCH, body, created_at=int(clock.now()))


async def close(hub: HubClient, height: int) -> dict[str, Any]:
    resp = await hub.http.post(f"/v1/admin/poc/rounds/{height}/close", headers=await hub.admin_headers())
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


async def stats(hub: HubClient, miner_id: str) -> dict[str, Any]:
    headers = await hub.admin_headers()
    out: dict[str, Any] = (
        await hub.http.get(f"/v1/contributions/stats?node_id={miner_id}", headers=headers)
    ).json()
    return out


async def poc_weight(hub: HubClient, miner_id: str) -> int:
    resp = await hub.http.get(f"/v1/miners/{miner_id}", headers=await hub.admin_headers())
    assert resp.status_code == 200, resp.text
    return int(resp.json()["poc_weight"])


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_an_honest_node_is_validated_weighed_and_recorded_once(
    hub_client: HubClient, clock: FakeClock
) -> None:
    key = crypto.KeyPair.generate()
    miner_id = await register(hub_client, clock, key)
    rnd = await open_round(hub_client)
    current = (await hub_client.http.get("/v1/poc/round")).json()
    assert current["block_height"] == rnd["block_height"] == 1 and len(rnd["block_hash"]) == 64
    assert current["params"] == PARAMS_TINY.to_dict() and current["r_target"] == DEFAULT_R_TARGET
    assert current["status"] == "open" and current["batch_size"] == 100

    nonces, dist = qualifying(rnd, key.pubkey, range(120))
    half = len(nonces) // 2
    first = signed_batch(key, clock, rnd, nonces[: half + 5], dist[: half + 5])
    resp = await hub_client.http.post("/v1/poc/batches", json=first)
    assert resp.status_code == 200, resp.text
    assert resp.json()["nonces_received"] == half + 5 and resp.json()["unique_nonces_total"] == half + 5
    # The second batch repeats five nonces of the first (and one of its own): each counts once.
    second = signed_batch(key, clock, rnd, [*nonces[half:], nonces[-1]], [*dist[half:], dist[-1]])
    out = (await hub_client.http.post("/v1/poc/batches", json=second)).json()
    assert out["block_height"] == 1 and out["unique_nonces_total"] == len(nonces)
    assert out["batch_id"] != resp.json()["batch_id"]

    closed = await close(hub_client, rnd["block_height"])
    assert closed["status"] == "validated"
    [result] = closed["results"]
    assert result["miner_id"] == miner_id and result["fraud"] is False and result["n_invalid"] == 0
    assert result["weight"] == len(nonces) == result["n_nonces"] and result["n_batches"] == 2
    assert await poc_weight(hub_client, miner_id) == len(nonces)
    assert hub_client.hub.live.nodes[miner_id].record.poc_weight == len(nonces)
    recorded = await stats(hub_client, miner_id)
    assert recorded["contribution_count"] == 1 and recorded["total_compute_score"] == len(nonces)

    again = await close(hub_client, rnd["block_height"])
    assert again["results"] == closed["results"]
    assert (await stats(hub_client, miner_id))["contribution_count"] == 1
    assert (await hub_client.http.get(f"/v1/poc/rounds/{rnd['block_height']}")).json() == closed
    assert (await hub_client.http.get("/v1/poc/round")).status_code == 404
    text = (await hub_client.http.get("/metrics")).text
    assert metric(text, "poolhub_poc_rounds_validated_total") == 1.0
    assert metric(text, "poolhub_poc_nonces_total") == len(nonces) + 6
    assert 'poolhub_poc_batches_total{outcome="accepted"} 2.0' in text


async def test_concurrent_batches_of_one_node_count_each_nonce_once(
    hub_client: HubClient, clock: FakeClock
) -> None:
    key = crypto.KeyPair.generate()
    await register(hub_client, clock, key)
    rnd = await open_round(hub_client)
    nonces, dist = qualifying(rnd, key.pubkey, range(80))
    # Four overlapping windows over the same nonces, sent at once.
    step = len(nonces) // 4
    bodies = [
        signed_batch(
            key, clock, rnd, nonces[i * step : i * step + 2 * step], dist[i * step : i * step + 2 * step]
        )
        for i in range(4)
    ]
    responses = await asyncio.gather(*(hub_client.http.post("/v1/poc/batches", json=b) for b in bodies))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    closed = await close(hub_client, rnd["block_height"])
    assert closed["results"][0]["n_nonces"] == len(nonces) == closed["results"][0]["weight"]


async def test_altered_distances_are_found_and_weigh_nothing(hub_client: HubClient, clock: FakeClock) -> None:
    honest, cheat = crypto.KeyPair.generate(), crypto.KeyPair.generate()
    honest_id, cheat_id = await register(hub_client, clock, honest), await register(hub_client, clock, cheat)
    rnd = await open_round(hub_client)
    nonces, dist = qualifying(rnd, honest.pubkey, range(60))
    await hub_client.http.post("/v1/poc/batches", json=signed_batch(honest, clock, rnd, nonces, dist))
    c_nonces, c_dist = qualifying(rnd, cheat.pubkey, range(60))
    # Still under r_target, but not what the network computes.
    forged = [max(0.0, d - 0.05) for d in c_dist]
    resp = await hub_client.http.post(
        "/v1/poc/batches", json=signed_batch(cheat, clock, rnd, c_nonces, forged)
    )
    assert resp.status_code == 200, resp.text

    results = {r["miner_id"]: r for r in (await close(hub_client, rnd["block_height"]))["results"]}
    assert results[honest_id]["fraud"] is False and results[honest_id]["weight"] == len(nonces)
    bad = results[cheat_id]
    assert bad["fraud"] is True and bad["weight"] == 0 and bad["n_invalid"] == len(c_nonces)
    assert bad["p_value"] < 1e-7
    assert await poc_weight(hub_client, cheat_id) == 0
    assert (await stats(hub_client, cheat_id))["contribution_count"] == 0
    assert (await stats(hub_client, honest_id))["contribution_count"] == 1
    assert metric((await hub_client.http.get("/metrics")).text, "poolhub_poc_fraud_total") == 1.0


async def test_non_qualifying_nonces_are_refused_when_claimed_and_caught_when_disguised(
    hub_client: HubClient, clock: FakeClock
) -> None:
    key = crypto.KeyPair.generate()
    miner_id = await register(hub_client, clock, key)
    rnd = await open_round(hub_client)
    candidates = list(range(80))
    dist = compute_distances(rnd["block_hash"], key.pubkey, candidates, PARAMS_TINY)
    losers = [n for n, d in zip(candidates, dist, strict=True) if d >= DEFAULT_R_TARGET]
    honest_losing = [float(d) for d in dist if d >= DEFAULT_R_TARGET]
    assert len(losers) >= 10
    # Claimed as they are: the reference calls a non-qualifying claim fraud, the hub refuses it outright.
    resp = await hub_client.http.post(
        "/v1/poc/batches", json=signed_batch(key, clock, rnd, losers, honest_losing)
    )
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "non_qualifying"
    # Disguised as qualifying: accepted at the door, caught by recomputation.
    disguised = signed_batch(key, clock, rnd, losers, [1.3] * len(losers))
    assert (await hub_client.http.post("/v1/poc/batches", json=disguised)).status_code == 200
    [result] = (await close(hub_client, rnd["block_height"]))["results"]
    assert result["fraud"] is True and result["weight"] == 0 and result["n_invalid"] == len(losers)
    assert await poc_weight(hub_client, miner_id) == 0


async def test_another_keys_nonces_are_refused_or_caught(hub_client: HubClient, clock: FakeClock) -> None:
    thief, victim = crypto.KeyPair.generate(), crypto.KeyPair.generate()
    thief_id = await register(hub_client, clock, thief)
    await register(hub_client, clock, victim)
    rnd = await open_round(hub_client)
    nonces, dist = qualifying(rnd, victim.pubkey, range(60))
    # Signed by the thief but claiming the victim's key: the signature check refuses it.
    claimed = signed_batch(thief, clock, rnd, nonces, dist, public_key=victim.pubkey)
    resp = await hub_client.http.post("/v1/poc/batches", json=claimed)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "pubkey_mismatch"
    # The victim's work submitted under the thief's own key: recomputed for the thief, it does not match.
    stolen = signed_batch(thief, clock, rnd, nonces, dist)
    assert (await hub_client.http.post("/v1/poc/batches", json=stolen)).status_code == 200
    [result] = (await close(hub_client, rnd["block_height"]))["results"]
    assert result["miner_id"] == thief_id and result["fraud"] is True and result["weight"] == 0


async def test_replays_old_rounds_and_strangers_are_refused(hub_client: HubClient, clock: FakeClock) -> None:
    key, stranger = crypto.KeyPair.generate(), crypto.KeyPair.generate()
    await register(hub_client, clock, key)
    old = await open_round(hub_client)
    nonces, dist = qualifying(old, key.pubkey, range(40))
    body = signed_batch(key, clock, old, nonces[:5], dist[:5])
    assert (await hub_client.http.post("/v1/poc/batches", json=body)).status_code == 200
    replay = await hub_client.http.post("/v1/poc/batches", json=body)
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "replayed_event"

    s_nonces, s_dist = qualifying(old, stranger.pubkey, range(20))
    resp = await hub_client.http.post(
        "/v1/poc/batches", json=signed_batch(stranger, clock, old, s_nonces, s_dist)
    )
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "not_registered"

    await close(hub_client, old["block_height"])
    late = signed_batch(key, clock, old, nonces[5:], dist[5:])
    resp = await hub_client.http.post("/v1/poc/batches", json=late)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "round_closed"
    new = await open_round(hub_client)
    assert new["block_height"] == old["block_height"] + 1 and new["block_hash"] != old["block_hash"]
    # The old round's work relabelled with the new height: no such (height, hash) round exists.
    relabelled = signed_batch(key, clock, old, nonces, dist, block_height=new["block_height"])
    resp = await hub_client.http.post("/v1/poc/batches", json=relabelled)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "unknown_round"
    unknown = signed_batch(key, clock, new, nonces, dist, block_height=99)
    resp = await hub_client.http.post("/v1/poc/batches", json=unknown)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "unknown_round"
    stale = crypto.sign_body(
        key,
        crypto.KIND_POC_BATCH,
        {**signed_batch(key, clock, new, nonces, dist), "sig_event": None},
        created_at=int(clock.now()) - 600,
    )
    resp = await hub_client.http.post("/v1/poc/batches", json=stale)
    assert resp.status_code == 401


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"dist": [1.0]}, "body"),  # lengths differ
        ({"nonces": [], "dist": []}, "nonces"),
        ({"nonces": [-1, 2], "dist": [1.0, 1.0]}, "nonces.0"),
        ({"nonces": [1, 2], "dist": [1.0, math.inf]}, "dist.1"),
        ({"nonces": list(range(10_001)), "dist": [1.0] * 10_001}, "nonces"),
        ({"public_key": "AB" * 32}, "public_key"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_malformed_batches_are_refused(
    hub_client: HubClient, clock: FakeClock, change: dict[str, Any], field: str
) -> None:
    key = crypto.KeyPair.generate()
    await register(hub_client, clock, key)
    rnd = await open_round(hub_client)
    plain = {**signed_batch(key, clock, rnd, [1, 2], [1.0, 1.1]), **change}
    body = crypto.sign_body(key, crypto.KIND_POC_BATCH, plain, created_at=int(clock.now()))
    # json.dumps writes Infinity, as a careless client might.
    resp = await hub_client.http.post(
        "/v1/poc/batches", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 422, resp.text
    fields = [p["field"] for p in resp.json()["error"]["details"]["errors"]]
    assert any(f.startswith(field) for f in fields), resp.text


async def test_a_due_round_is_closed_by_maintenance(hub_client: HubClient, clock: FakeClock) -> None:
    key = crypto.KeyPair.generate()
    miner_id = await register(hub_client, clock, key)
    rnd = await open_round(hub_client, duration_sec=60)
    assert rnd["closes_at"] == rnd["opened_at"] + 60
    nonces, dist = qualifying(rnd, key.pubkey, range(40))
    assert (
        await hub_client.http.post("/v1/poc/batches", json=signed_batch(key, clock, rnd, nonces, dist))
    ).is_success
    await hub_client.hub.maintain()
    assert (await hub_client.http.get("/v1/poc/round")).status_code == 200  # not due yet
    clock.advance(61)
    assert (await hub_client.http.get("/v1/poc/round")).status_code == 404
    late = await hub_client.http.post("/v1/poc/batches", json=signed_batch(key, clock, rnd, [999], [1.0]))
    assert late.status_code == 409 and late.json()["error"]["code"] == "round_closed"
    await hub_client.hub.maintain()
    done = (await hub_client.http.get(f"/v1/poc/rounds/{rnd['block_height']}")).json()
    assert done["status"] == "validated" and done["results"][0]["weight"] == len(nonces)
    assert await poc_weight(hub_client, miner_id) == len(nonces)
    await hub_client.hub.maintain()
    assert (await stats(hub_client, miner_id))["contribution_count"] == 1


async def test_opening_rounds_is_for_admins_with_sound_parameters(
    hub_client: HubClient, clock: FakeClock
) -> None:
    user = await hub_client.make_user("plain")
    admin = await hub_client.admin_headers()
    assert (await hub_client.http.post("/v1/admin/poc/rounds", json={}, headers=user)).status_code == 403
    assert (await hub_client.http.post("/v1/admin/poc/rounds/1/close", headers=user)).status_code == 403
    assert (await hub_client.http.get("/v1/poc/round")).status_code == 404
    assert (await hub_client.http.get("/v1/poc/rounds/1")).status_code == 404
    bad = [
        {"params_name": "v3"},
        {"params_name": "tiny", "params": PARAMS_TINY.to_dict()},
        {"params": {**PARAMS_TINY.to_dict(), "n_heads": 5}},  # 32 is not divisible by 5
        {"params": {**PARAMS_TINY.to_dict(), "colour": "blue"}},
        {"r_target": 0},
        {"duration_sec": -1},
    ]
    for body in bad:
        resp = await hub_client.http.post("/v1/admin/poc/rounds", json=body, headers=admin)
        assert resp.status_code == 422, (body, resp.text)
    custom = {**PARAMS_TINY.to_dict(), "seq_len": 2}
    resp = await hub_client.http.post(
        "/v1/admin/poc/rounds", json={"params": custom, "r_target": 1.5}, headers=admin
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["params"] == custom and resp.json()["params_name"] is None
    assert resp.json()["r_target"] == 1.5 and resp.json()["closes_at"] - resp.json()["opened_at"] == 600
    again = await hub_client.http.post("/v1/admin/poc/rounds", json={}, headers=admin)
    assert again.status_code == 409 and again.json()["error"]["code"] == "round_open"
    clock.advance(601)
    # An overdue round is closed by the next open and validated by maintenance (nothing was submitted).
    nxt = await hub_client.http.post("/v1/admin/poc/rounds", json={}, headers=admin)
    assert nxt.status_code == 201 and nxt.json()["params_name"] == "v1" and nxt.json()["block_height"] == 2
    assert (await hub_client.http.get("/v1/poc/rounds/1")).json()["status"] == "closed"
    await hub_client.hub.poc.close_due()
    assert (await hub_client.http.get("/v1/poc/rounds/1")).json()["status"] == "validated"


async def test_two_replicas_closing_at_once_record_the_round_once(
    hub_client_factory: Callable[..., Awaitable[HubClient]], clock: FakeClock
) -> None:
    one, two = await hub_client_factory(), await hub_client_factory()
    if one.hub.db.is_sqlite:
        pytest.skip("SQLite is one hub's embedded store; replicas share PostgreSQL")
    key = crypto.KeyPair.generate()
    miner_id = await register(one, clock, key)
    rnd = await open_round(one)
    nonces, dist = qualifying(rnd, key.pubkey, range(40))
    assert (
        await two.http.post("/v1/poc/batches", json=signed_batch(key, clock, rnd, nonces, dist))
    ).is_success
    first, second = await asyncio.gather(close(one, rnd["block_height"]), close(two, rnd["block_height"]))
    assert first["results"] == second["results"] and first["results"][0]["weight"] == len(nonces)
    assert (await stats(one, miner_id))["contribution_count"] == 1
