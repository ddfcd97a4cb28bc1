"""Seed-000 registry, allowlist, owner API keys and the node lifecycle over the real app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from gpupool import crypto
from gpupool.core.ports import FakeClock
from tests.conftest import HubClient
from tests.factories import OTHER_OWNER, OWNER, registration, worker

HubFactory = Callable[..., Awaitable[HubClient]]


async def register(client: HubClient, body: dict[str, object], **headers: str) -> dict[str, object]:
    resp = await client.http.post("/v1/miners/register", json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    out: dict[str, object] = resp.json()
    return out


async def test_register_returns_session_and_node_is_listed_online(
    hub_client: HubClient, clock: FakeClock
) -> None:
    key = crypto.KeyPair.generate()
    out = await register(hub_client, registration(key, clock, miner_id="m-one"))
    assert out["miner_id"] == "m-one" and out["status"] == "online"
    assert out["lease_ttl_sec"] == 300 and out["next_heartbeat_sec"] == 10
    admin = await hub_client.admin_headers()
    listing = (await hub_client.http.get("/v1/miners", headers=admin)).json()
    assert listing["total"] == 1
    node = listing["items"][0]
    assert node["pubkey"] == key.pubkey and node["owner"] == OWNER and node["status"] == "online"
    assert node["gpus"][0]["vram_gb"] == 80.0 and node["price_micro_per_ksec"] == 1_000_000
    # The owner's ledger account exists as soon as the node is registered.
    account = await hub_client.http.get(f"/v1/admin/accounts/{OWNER}", headers=admin)
    assert account.status_code == 200 and account.json()["available"] == 0


async def test_registration_accepts_npub_and_lowercase_owner(hub_client: HubClient, clock: FakeClock) -> None:
    key = crypto.KeyPair.generate()
    out = await register(hub_client, registration(key, clock, pubkey=key.npub, owner=OWNER.lower()))
    admin = await hub_client.admin_headers()
    node = (await hub_client.http.get(f"/v1/miners/{out['miner_id']}", headers=admin)).json()
    assert node["pubkey"] == key.pubkey and node["owner"] == OWNER


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("owner", "0x5AaEb6053F3E94C9b9A09f33669435E7Ef1BeAed"),  # bad EIP-55 checksum
        ("owner", "not-an-address-at-all-but-42-chars-long!!!"),
        ("pubkey", "ab" * 32),  # not a point on the curve... or another key's: refused either way
        ("price_micro_per_ksec", -1),
        ("max_parallel", 0),
        ("gpus", [{"index": 0}]),
    ],
)
async def test_bad_registration_fields_are_refused(
    hub_client: HubClient, clock: FakeClock, field: str, value: object
) -> None:
    key = crypto.KeyPair.generate()
    body = registration(key, clock, **{field: value})
    resp = await hub_client.http.post("/v1/miners/register", json=body)
    assert resp.status_code in (401, 422), resp.text
    if resp.status_code == 422:
        assert field in resp.json()["error"]["details"]["field"]
    admin = await hub_client.admin_headers()
    assert (await hub_client.http.get("/v1/miners", headers=admin)).json()["total"] == 0


async def test_permissions_and_workers_seed_000(hub_client: HubClient, clock: FakeClock) -> None:
    key = crypto.KeyPair.generate()
    before = (await hub_client.http.get(f"/permissions/{key.pubkey}")).json()
    assert before["registered"] is False and before["write"] == {"mode": "Deny"}

    # Unsigned (what the DStack backend sends): pending, never binds the key to an owner.
    resp = await hub_client.http.post("/workers", json=worker(key, clock, signed=False))
    assert resp.status_code == 201 and resp.json()["status"] == "pending"
    pending = (await hub_client.http.get(f"/permissions/{key.npub}")).json()
    assert pending["registered"] is True and pending["write"]["mode"] == "Deny"
    assert pending["owner"] == OWNER and pending["signed"] is False  # as named, not bound

    # The same key registering signed authorizes it.
    resp = await hub_client.http.post("/workers", json=worker(key, clock))
    assert resp.status_code == 201 and resp.json()["status"] == "authorized"
    after = (await hub_client.http.get(f"/permissions/{key.pubkey}")).json()
    assert after["write"]["mode"] == "AllowAll" and after["read"]["mode"] == "AllowAll"
    assert after["owner"] == OWNER

    # An unsigned request cannot rebind an authorized key to another owner.
    resp = await hub_client.http.post("/workers", json=worker(key, clock, owner=OTHER_OWNER, signed=False))
    assert resp.json()["owner"] == OWNER
    assert (await hub_client.http.get(f"/permissions/{key.pubkey}")).json()["owner"] == OWNER


async def test_admin_approves_pending_worker(hub_client: HubClient, clock: FakeClock) -> None:
    key = crypto.KeyPair.generate()
    await hub_client.http.post("/workers", json=worker(key, clock, signed=False))
    admin = await hub_client.admin_headers()
    pending = (await hub_client.http.get("/v1/admin/workers?status=pending", headers=admin)).json()
    assert [w["pubkey"] for w in pending] == [key.pubkey]
    user = await hub_client.make_user("mallory")
    assert (
        await hub_client.http.post(f"/v1/admin/workers/{key.pubkey}/approve", headers=user)
    ).status_code == 403
    resp = await hub_client.http.post(f"/v1/admin/workers/{key.pubkey}/approve", headers=admin)
    assert resp.status_code == 200 and resp.json()["status"] == "authorized"
    assert (await hub_client.http.get(f"/permissions/{key.pubkey}")).json()["write"]["mode"] == "AllowAll"
    missing = crypto.KeyPair.generate().pubkey
    assert (
        await hub_client.http.post(f"/v1/admin/workers/{missing}/approve", headers=admin)
    ).status_code == 404


async def test_allowlist_mode_admits_only_listed_keys_or_owners(
    hub_client_factory: HubFactory, clock: FakeClock
) -> None:
    client = await hub_client_factory(registry_mode="allowlist")
    admin = await client.admin_headers()
    key, other = crypto.KeyPair.generate(), crypto.KeyPair.generate()

    refused = await client.http.post("/v1/miners/register", json=registration(key, clock))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_authorized"

    resp = await client.http.post("/v1/admin/allowlist", json={"entry": key.npub}, headers=admin)
    assert resp.status_code == 201 and resp.json() == {"entry": key.pubkey, "kind": "pubkey"}
    await register(client, registration(key, clock))

    # An owner entry admits every key of that owner.
    assert (await client.http.post("/v1/miners/register", json=registration(other, clock))).status_code == 403
    await client.http.post("/v1/admin/allowlist", json={"entry": OWNER.lower()}, headers=admin)
    await register(client, registration(other, clock))
    listed = (await client.http.get("/v1/admin/allowlist", headers=admin)).json()
    assert {e["kind"] for e in listed} == {"pubkey", "owner"}

    # Removing the owner entry withdraws permission from the signed worker record too.
    await client.http.post("/workers", json=worker(other, clock))
    assert (await client.http.get(f"/permissions/{other.pubkey}")).json()["write"]["mode"] == "AllowAll"
    resp = await client.http.delete(f"/v1/admin/allowlist/{OWNER}", headers=admin)
    assert resp.status_code == 204
    assert (await client.http.get(f"/permissions/{other.pubkey}")).json()["write"]["mode"] == "Deny"
    assert (await client.http.delete(f"/v1/admin/allowlist/{OWNER}", headers=admin)).status_code == 404
    bad = await client.http.post("/v1/admin/allowlist", json={"entry": "nonsense"}, headers=admin)
    assert bad.status_code == 422 and bad.json()["error"]["details"]["field"] == "entry"


async def test_owner_api_key_admits_that_owner_only_and_can_be_revoked(
    hub_client_factory: HubFactory, clock: FakeClock
) -> None:
    client = await hub_client_factory(registry_mode="allowlist")
    admin = await client.admin_headers()
    created = await client.http.post(
        "/v1/admin/api-keys", json={"owner": OWNER, "label": "rack 1"}, headers=admin
    )
    assert created.status_code == 201
    api_key, key_id = created.json()["key"], created.json()["id"]
    assert api_key.startswith("gpk_")

    listed = (await client.http.get(f"/v1/admin/api-keys?owner={OWNER}", headers=admin)).json()
    assert [k["id"] for k in listed] == [key_id] and listed[0]["key"] is None  # never shown again

    await register(client, registration(crypto.KeyPair.generate(), clock), **{"X-Api-Key": api_key})
    # The key is bound to its owner: it does not admit a node of another owner.
    other = registration(crypto.KeyPair.generate(), clock, owner=OTHER_OWNER)
    assert (
        await client.http.post("/v1/miners/register", json=other, headers={"X-Api-Key": api_key})
    ).status_code == 403

    assert (await client.http.delete(f"/v1/admin/api-keys/{key_id}", headers=admin)).status_code == 204
    late = registration(crypto.KeyPair.generate(), clock)
    assert (
        await client.http.post("/v1/miners/register", json=late, headers={"X-Api-Key": api_key})
    ).status_code == 403
    assert (await client.http.delete(f"/v1/admin/api-keys/{key_id}", headers=admin)).status_code == 404


async def test_update_renew_logout_and_session_expiry(hub_client: HubClient, clock: FakeClock) -> None:
    key = crypto.KeyPair.generate()
    out = await register(hub_client, registration(key, clock, miner_id="m-life"))
    token = out["session_token"]

    resp = await hub_client.http.post(
        "/v1/miners/update", json={"session_token": token, "queue_len": 1, "price_micro_per_ksec": 700_000}
    )
    assert resp.status_code == 200 and resp.json()["miner_id"] == "m-life"
    admin = await hub_client.admin_headers()
    node = (await hub_client.http.get("/v1/miners/m-life", headers=admin)).json()
    assert node["price_micro_per_ksec"] == 700_000

    clock.advance(200)
    renewed = await hub_client.http.get(f"/v1/miners/lease/renew?session_token={token}")
    assert renewed.status_code == 200 and renewed.json()["lease_expires_at"] == clock.now() + 300

    clock.advance(301)  # the lease ran out: the node must register again
    expired = await hub_client.http.get(f"/v1/miners/lease/renew?session_token={token}")
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "session_expired"

    again = await register(hub_client, registration(key, clock, miner_id="m-life"))
    assert again["miner_id"] == "m-life"
    resp = await hub_client.http.post("/v1/miners/logout", json={"session_token": again["session_token"]})
    assert resp.status_code == 204
    node = (await hub_client.http.get("/v1/miners/m-life", headers=admin)).json()
    assert node["status"] == "offline"
    after = await hub_client.http.post("/v1/miners/update", json={"session_token": again["session_token"]})
    assert after.status_code == 401 and after.json()["error"]["code"] == "session_invalid"


async def test_reregistration_revokes_the_previous_session(hub_client: HubClient, clock: FakeClock) -> None:
    key = crypto.KeyPair.generate()
    first = await register(hub_client, registration(key, clock))
    clock.advance(1)
    second = await register(hub_client, registration(key, clock))
    assert first["miner_id"] == second["miner_id"]
    old = await hub_client.http.post("/v1/miners/update", json={"session_token": first["session_token"]})
    assert old.status_code == 401
    new = await hub_client.http.post("/v1/miners/update", json={"session_token": second["session_token"]})
    assert new.status_code == 200


async def test_miners_listing_is_admin_only_and_paginated(hub_client: HubClient, clock: FakeClock) -> None:
    for i in range(5):
        await register(hub_client, registration(crypto.KeyPair.generate(), clock, miner_id=f"m-{i}"))
    admin = await hub_client.admin_headers()
    page = (await hub_client.http.get("/v1/miners?page=2&page_size=2", headers=admin)).json()
    assert page["total"] == 5 and [m["miner_id"] for m in page["items"]] == ["m-2", "m-3"]
    user = await hub_client.make_user("carol")
    assert (await hub_client.http.get("/v1/miners", headers=user)).status_code == 403
    assert (await hub_client.http.get("/v1/miners")).status_code == 401
    assert (await hub_client.http.get("/v1/miners?page=0", headers=admin)).status_code == 422
    assert (await hub_client.http.get("/v1/miners/nope", headers=admin)).status_code == 404


async def test_nodes_survive_a_hub_restart(hub_client_factory: HubFactory, clock: FakeClock) -> None:
    first = await hub_client_factory()
    key = crypto.KeyPair.generate()
    out = await register(first, registration(key, clock, miner_id="m-keep"))
    await first.hub.live.flush()
    second = await hub_client_factory()  # another hub over the same database, as after a restart
    assert "m-keep" in second.hub.live.nodes
    resp = await second.http.post("/v1/miners/update", json={"session_token": out["session_token"]})
    assert resp.status_code == 200, resp.text
