"""Every way to lie to the registry is refused with its reason code, and nothing changes."""

from __future__ import annotations

import pytest

from gpupool import crypto
from gpupool.core.ports import FakeClock
from tests.conftest import HubClient
from tests.factories import OTHER_OWNER, registration, worker


async def miners(client: HubClient) -> list[dict[str, object]]:
    admin = await client.admin_headers()
    items: list[dict[str, object]] = (await client.http.get("/v1/miners", headers=admin)).json()["items"]
    return items


async def refused(client: HubClient, body: dict[str, object], code: str, status: int = 401) -> None:
    resp = await client.http.post("/v1/miners/register", json=body)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code


async def test_forged_signature_is_refused(hub_client: HubClient, clock: FakeClock) -> None:
    key = crypto.KeyPair.generate()
    body = registration(key, clock)
    sig = body["sig_event"]["sig"]
    body["sig_event"]["sig"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    await refused(hub_client, body, "bad_signature")
    assert await miners(hub_client) == []


async def test_signature_by_another_key_is_refused(hub_client: HubClient, clock: FakeClock) -> None:
    victim, attacker = crypto.KeyPair.generate(), crypto.KeyPair.generate()
    body = registration(attacker, clock, pubkey=victim.pubkey)  # claims the victim's key, signs with its own
    await refused(hub_client, body, "pubkey_mismatch")
    # Re-pointing the event's pubkey at the victim breaks the id instead.
    forged = registration(attacker, clock, pubkey=victim.pubkey)
    forged["sig_event"]["pubkey"] = victim.pubkey
    await refused(hub_client, forged, "bad_event_id")
    assert await miners(hub_client) == []


async def test_replayed_event_is_refused(hub_client: HubClient, clock: FakeClock) -> None:
    key = crypto.KeyPair.generate()
    body = registration(key, clock)
    assert (await hub_client.http.post("/v1/miners/register", json=body)).status_code == 200
    await refused(hub_client, body, "replayed_event")


async def test_replay_is_refused_by_another_replica_too(hub_client_factory: object, clock: FakeClock) -> None:
    make = hub_client_factory  # two hubs over one database
    one: HubClient = await make()  # type: ignore[operator]
    two: HubClient = await make()  # type: ignore[operator]
    body = registration(crypto.KeyPair.generate(), clock)
    assert (await one.http.post("/v1/miners/register", json=body)).status_code == 200
    await refused(two, body, "replayed_event")


@pytest.mark.parametrize("age_s", [600, -600])
async def test_event_ten_minutes_off_is_refused(hub_client: HubClient, clock: FakeClock, age_s: int) -> None:
    await refused(hub_client, registration(crypto.KeyPair.generate(), clock, age_s=age_s), "stale_event")
    assert await miners(hub_client) == []


async def test_content_that_differs_from_the_body_is_refused(hub_client: HubClient, clock: FakeClock) -> None:
    body = registration(crypto.KeyPair.generate(), clock)
    body["price_micro_per_ksec"] = 1  # changed after signing
    await refused(hub_client, body, "content_mismatch")


async def test_unsigned_registration_is_refused(hub_client: HubClient, clock: FakeClock) -> None:
    body = registration(crypto.KeyPair.generate(), clock)
    del body["sig_event"]
    resp = await hub_client.http.post("/v1/miners/register", json=body)
    assert resp.status_code == 422 and resp.json()["error"]["details"]["field"] == "sig_event"


async def test_session_token_of_another_node_is_refused(hub_client: HubClient, clock: FakeClock) -> None:
    a = (
        await hub_client.http.post(
            "/v1/miners/register", json=registration(crypto.KeyPair.generate(), clock, miner_id="node-a")
        )
    ).json()
    await hub_client.http.post(
        "/v1/miners/register", json=registration(crypto.KeyPair.generate(), clock, miner_id="node-b")
    )
    resp = await hub_client.http.post(
        "/v1/miners/update", json={"session_token": a["session_token"], "miner_id": "node-b", "queue_len": 5}
    )
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "session_mismatch"
    assert hub_client.hub.live.nodes["node-b"].queue_len == 0
    forged = await hub_client.http.post("/v1/miners/update", json={"session_token": "gps_" + "x" * 40})
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "session_invalid"


async def test_a_node_cannot_take_over_another_nodes_id(hub_client: HubClient, clock: FakeClock) -> None:
    owner_key, intruder = crypto.KeyPair.generate(), crypto.KeyPair.generate()
    await hub_client.http.post("/v1/miners/register", json=registration(owner_key, clock, miner_id="prized"))
    body = registration(intruder, clock, miner_id="prized", owner=OTHER_OWNER, price_micro_per_ksec=1)
    await refused(hub_client, body, "miner_id_taken", status=409)
    [node] = await miners(hub_client)
    assert node["pubkey"] == owner_key.pubkey and node["price_micro_per_ksec"] == 1_000_000
    # Nor rename itself into it after registering under its own id.
    await hub_client.http.post("/v1/miners/register", json=registration(intruder, clock, miner_id="mine"))
    clock.advance(1)
    await refused(
        hub_client, registration(intruder, clock, miner_id="prized"), "miner_id_mismatch", status=409
    )


async def test_unsigned_worker_cannot_bind_a_key(hub_client: HubClient, clock: FakeClock) -> None:
    key = crypto.KeyPair.generate()
    body = worker(key, clock, signed=False)
    assert (await hub_client.http.post("/workers", json=body)).json()["status"] == "pending"
    perms = (await hub_client.http.get(f"/permissions/{key.pubkey}")).json()
    assert perms["authorized"] is False and perms["write"]["mode"] == "Deny" and perms["signed"] is False
    claim = {"pubkey": key.pubkey, "owner": OTHER_OWNER, "node_type": "node-H100x1"}
    forged = crypto.sign_body(
        crypto.KeyPair.generate(), crypto.KIND_REGISTRATION, claim, created_at=int(clock.now())
    )
    resp = await hub_client.http.post("/workers", json=forged)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "pubkey_mismatch"
