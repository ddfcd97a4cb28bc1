"""Balances, transfers, minting, idempotency and the trial balance through the real app."""

from __future__ import annotations

import pytest

from tests.conftest import HubClient

OWNER = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # an EIP-55 example address


async def _balance(client: HubClient, headers: dict[str, str]) -> dict[str, object]:
    resp = await client.http.get("/v1/balance", headers=headers)
    assert resp.status_code == 200, resp.text
    body: dict[str, object] = resp.json()
    return body


async def test_new_user_has_zero_balance(hub_client: HubClient) -> None:
    alice = await hub_client.make_user("alice")
    assert await _balance(hub_client, alice) == {"account": "user:alice", "available": 0, "held": 0}


async def test_transfer_moves_money_and_lists_for_both_sides(hub_client: HubClient) -> None:
    alice = await hub_client.make_user("alice", balance=5_000_000)
    bob = await hub_client.make_user("bob")
    resp = await hub_client.http.post(
        "/v1/transfers", json={"to": "bob", "amount": 1_250_000, "idempotency_key": "t-1"}, headers=alice
    )
    assert resp.status_code == 201, resp.text
    transfer = resp.json()
    assert (
        transfer["from"] == "user:alice" and transfer["to"] == "user:bob" and transfer["amount"] == 1_250_000
    )
    assert (await _balance(hub_client, alice))["available"] == 3_750_000
    assert (await _balance(hub_client, bob))["available"] == 1_250_000
    for headers in (alice, bob):
        listed = (await hub_client.http.get("/v1/transfers", headers=headers)).json()["transfers"]
        assert transfer["id"] in [t["id"] for t in listed]


async def test_transfer_with_same_idempotency_key_moves_money_once(hub_client: HubClient) -> None:
    alice = await hub_client.make_user("alice", balance=1_000_000)
    await hub_client.make_user("bob")
    body = {"to": "user:bob", "amount": 300_000, "idempotency_key": "same-key"}
    first = await hub_client.http.post("/v1/transfers", json=body, headers=alice)
    second = await hub_client.http.post("/v1/transfers", json=body, headers=alice)
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"] and second.json()["replayed"] is True
    assert (await _balance(hub_client, alice))["available"] == 700_000


async def test_same_key_with_different_body_is_a_conflict(hub_client: HubClient) -> None:
    alice = await hub_client.make_user("alice", balance=1_000_000)
    await hub_client.make_user("bob")
    ok = await hub_client.http.post(
        "/v1/transfers", json={"to": "bob", "amount": 1, "idempotency_key": "k"}, headers=alice
    )
    assert ok.status_code == 201
    clash = await hub_client.http.post(
        "/v1/transfers", json={"to": "bob", "amount": 2, "idempotency_key": "k"}, headers=alice
    )
    assert clash.status_code == 409
    assert clash.json()["error"]["code"] == "idempotency_conflict"
    assert (await _balance(hub_client, alice))["available"] == 999_999


async def test_idempotency_keys_are_per_sender(hub_client: HubClient) -> None:
    alice = await hub_client.make_user("alice", balance=10)
    bob = await hub_client.make_user("bob", balance=10)
    await hub_client.make_user("carol")
    for headers in (alice, bob):
        resp = await hub_client.http.post(
            "/v1/transfers", json={"to": "carol", "amount": 5, "idempotency_key": "shared"}, headers=headers
        )
        assert resp.status_code == 201
    carol = await hub_client.make_user("carol2")
    assert (await _balance(hub_client, carol))["available"] == 0


async def test_overdraft_is_402_and_writes_nothing(hub_client: HubClient) -> None:
    alice = await hub_client.make_user("alice", balance=100)
    await hub_client.make_user("bob")
    resp = await hub_client.http.post(
        "/v1/transfers", json={"to": "bob", "amount": 101, "idempotency_key": "too-much"}, headers=alice
    )
    assert resp.status_code == 402
    assert resp.json()["error"]["code"] == "insufficient_funds"
    assert (await _balance(hub_client, alice))["available"] == 100
    listed = (await hub_client.http.get("/v1/transfers", headers=alice)).json()["transfers"]
    assert [t["kind"] for t in listed] == ["mint"]
    # The key was not consumed by the failed attempt.
    resp = await hub_client.http.post(
        "/v1/transfers", json={"to": "bob", "amount": 100, "idempotency_key": "too-much"}, headers=alice
    )
    assert resp.status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"to": "bob", "amount": 0, "idempotency_key": "k"}, "amount"),
        ({"to": "bob", "amount": -5, "idempotency_key": "k"}, "amount"),
        ({"to": "bob", "amount": 1.5, "idempotency_key": "k"}, "amount"),
        ({"to": "bob", "amount": "10", "idempotency_key": "k"}, "amount"),
        ({"to": "bob", "amount": True, "idempotency_key": "k"}, "amount"),
        ({"to": "bob", "amount": 10}, "idempotency_key"),
        ({"amount": 10, "idempotency_key": "k"}, "to"),
        ({"to": "bob", "amount": 10, "idempotency_key": "has space"}, "idempotency_key"),
        ({"to": "bob", "amount": 10**16, "idempotency_key": "k"}, "amount"),
        ({"to": "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "amount": 10, "idempotency_key": "k"}, "owner"),
    ],
)
async def test_bad_transfer_input_is_422_naming_the_field(
    hub_client: HubClient, body: dict[str, object], field: str
) -> None:
    alice = await hub_client.make_user("alice", balance=1_000)
    await hub_client.make_user("bob")
    resp = await hub_client.http.post("/v1/transfers", json=body, headers=alice)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["details"]["field"] == field
    assert (await _balance(hub_client, alice))["available"] == 1_000


async def test_malformed_json_is_422(hub_client: HubClient) -> None:
    alice = await hub_client.make_user("alice")
    resp = await hub_client.http.post(
        "/v1/transfers", content=b"{not json", headers={**alice, "Content-Type": "application/json"}
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid_input"


@pytest.mark.parametrize("to", ["ghost", "user:ghost", OWNER])
async def test_transfer_to_unknown_account_is_404(hub_client: HubClient, to: str) -> None:
    alice = await hub_client.make_user("alice", balance=1_000)
    resp = await hub_client.http.post(
        "/v1/transfers", json={"to": to, "amount": 1, "idempotency_key": "k"}, headers=alice
    )
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"
    assert (await _balance(hub_client, alice))["available"] == 1_000


async def test_transfer_to_self_is_refused(hub_client: HubClient) -> None:
    alice = await hub_client.make_user("alice", balance=1_000)
    resp = await hub_client.http.post(
        "/v1/transfers", json={"to": "alice", "amount": 1, "idempotency_key": "k"}, headers=alice
    )
    assert resp.status_code == 422


async def test_oversized_body_is_413(hub_client: HubClient) -> None:
    alice = await hub_client.make_user("alice")
    big = {"to": "bob", "amount": 1, "idempotency_key": "k", "pad": "x" * (2 << 20)}
    resp = await hub_client.http.post("/v1/transfers", json=big, headers=alice)
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"


async def test_oversized_chunked_body_is_413(hub_client: HubClient) -> None:
    alice = await hub_client.make_user("alice")

    async def chunks():  # no Content-Length: the limit must hold on the stream itself
        for _ in range(40):
            yield b"x" * 65536

    resp = await hub_client.http.post("/v1/transfers", content=chunks(), headers=alice)
    assert resp.status_code == 413


async def test_mint_is_admin_only_and_can_fund_an_owner_address(hub_client: HubClient) -> None:
    user = await hub_client.make_user("mallory")
    body = {"to": "mallory", "amount": 10**9, "idempotency_key": "free-money"}
    denied = await hub_client.http.post("/v1/admin/mint", json=body, headers=user)
    assert denied.status_code == 403
    assert (await _balance(hub_client, user))["available"] == 0
    admin = await hub_client.admin_headers()
    owner = await hub_client.http.post(
        "/v1/admin/mint", json={"to": OWNER.lower(), "amount": 42, "idempotency_key": "o"}, headers=admin
    )
    assert owner.status_code == 201, owner.text
    assert owner.json()["to"] == OWNER  # stored under the checksummed form
    view = await hub_client.http.get(f"/v1/admin/accounts/{OWNER}", headers=admin)
    assert view.json() == {"account": OWNER, "available": 42, "held": 0}


async def test_user_cannot_use_admin_views(hub_client: HubClient) -> None:
    user = await hub_client.make_user("eve")
    assert (await hub_client.http.get("/v1/admin/accounts/user:admin", headers=user)).status_code == 403
    assert (await hub_client.http.get("/v1/admin/ledger/trial-balance", headers=user)).status_code == 403


async def test_user_sees_only_own_transfers(hub_client: HubClient) -> None:
    alice = await hub_client.make_user("alice", balance=100)
    await hub_client.make_user("bob")
    eve = await hub_client.make_user("eve")
    await hub_client.http.post(
        "/v1/transfers", json={"to": "bob", "amount": 7, "idempotency_key": "a"}, headers=alice
    )
    seen = (await hub_client.http.get("/v1/transfers", headers=eve)).json()["transfers"]
    assert seen == []


async def test_transfer_history_pages(hub_client: HubClient) -> None:
    alice = await hub_client.make_user("alice", balance=100)
    await hub_client.make_user("bob")
    for i in range(5):
        resp = await hub_client.http.post(
            "/v1/transfers", json={"to": "bob", "amount": 1, "idempotency_key": f"p{i}"}, headers=alice
        )
        assert resp.status_code == 201
    page1 = (await hub_client.http.get("/v1/transfers?limit=3", headers=alice)).json()
    page2 = (
        await hub_client.http.get(f"/v1/transfers?limit=3&before={page1['next_before']}", headers=alice)
    ).json()
    ids = [t["id"] for t in page1["transfers"] + page2["transfers"]]
    assert len(ids) == 6 and len(set(ids)) == 6 and ids == sorted(ids, reverse=True)
    assert (await hub_client.http.get("/v1/transfers?limit=0", headers=alice)).status_code == 422


async def test_trial_balance_is_balanced_after_activity(hub_client: HubClient) -> None:
    alice = await hub_client.make_user("alice", balance=1_000)
    await hub_client.make_user("bob", balance=500)
    await hub_client.http.post(
        "/v1/transfers", json={"to": "bob", "amount": 250, "idempotency_key": "x"}, headers=alice
    )
    admin = await hub_client.admin_headers()
    tb = (await hub_client.http.get("/v1/admin/ledger/trial-balance", headers=admin)).json()
    assert tb["balanced"] is True and tb["total"] == 0
    assert tb["totals_by_type"]["user"] == 1_500
    assert tb["totals_by_type"]["system"] == -1_500
    by_account = {a["account"]: a for a in tb["accounts"]}
    assert by_account["user:alice"]["balance"] == by_account["user:alice"]["entries_sum"] == 750


async def test_health_and_metrics(hub_client: HubClient) -> None:
    health = (await hub_client.http.get("/v1/health")).json()
    assert health["status"] == "ok" and health["version"]
    await hub_client.http.get("/v1/me")
    text = (await hub_client.http.get("/metrics")).text
    assert 'poolhub_http_requests_total{method="GET",route="/v1/me",status="401"} 1.0' in text
    assert "poolhub_http_request_duration_seconds_bucket" in text
    assert (await hub_client.http.get("/v1/metrics")).status_code == 200


async def test_unknown_route_uses_error_envelope(hub_client: HubClient) -> None:
    resp = await hub_client.http.get("/v1/nope")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"
