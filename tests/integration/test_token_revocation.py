"""Sessions end when they must: a reused refresh token, a disabled, deleted or logged-out user.

Through the real app on SQLite and PostgreSQL. A token names its user's id and generation; the
generation changes when an admin cuts the user off, and a refresh token used twice ends every session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from gpupool.core.ports import FakeClock
from tests.conftest import HubClient

TRIALS = 32  # a race lost 1 time in 4 escapes 32 trials with probability (3/4)^32 < 1e-4


def bearer(tokens: dict[str, object]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def refresh(http: httpx.AsyncClient, token: object) -> httpx.Response:
    return await http.post("/v1/auth/refresh", json={"refresh_token": token})


async def test_concurrent_refresh_with_one_token_leaves_no_token_of_the_family_working(
    hub_client: HubClient,
) -> None:
    await hub_client.make_user("racer")
    for _ in range(TRIALS):
        first = await hub_client.login("racer", "pw-racer-secret")
        answers = await asyncio.gather(
            refresh(hub_client.http, first["refresh_token"]), refresh(hub_client.http, first["refresh_token"])
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses in ([200, 401], [401, 401]), [a.text for a in answers]
        assert any(a.json().get("error", {}).get("code") == "refresh_token_reused" for a in answers)
        for answer in answers:
            if answer.status_code != 200:
                continue
            won = answer.json()
            # The winner's new refresh token and new access token died with the family.
            assert (await refresh(hub_client.http, won["refresh_token"])).status_code == 401
            assert (await hub_client.http.get("/v1/me", headers=bearer(won))).status_code == 401
        assert (await hub_client.http.get("/v1/me", headers=bearer(first))).status_code == 401


async def test_a_reused_refresh_token_ends_every_session_of_the_user(hub_client: HubClient) -> None:
    await hub_client.make_user("erin")
    laptop = await hub_client.login("erin", "pw-erin-secret")
    phone = await hub_client.login("erin", "pw-erin-secret")
    rotated = (await refresh(hub_client.http, laptop["refresh_token"])).json()
    replay = await refresh(hub_client.http, laptop["refresh_token"])
    assert replay.json()["error"]["code"] == "refresh_token_reused"
    for tokens in (rotated, phone):
        assert (await hub_client.http.get("/v1/me", headers=bearer(tokens))).status_code == 401
        dead = await refresh(hub_client.http, tokens["refresh_token"])
        assert dead.status_code == 401
        assert dead.json()["error"]["code"] == "token_revoked"
    fresh = await hub_client.login("erin", "pw-erin-secret")
    assert (await hub_client.http.get("/v1/me", headers=bearer(fresh))).status_code == 200


async def test_a_disabled_users_tokens_stop_reading_and_moving_money(hub_client: HubClient) -> None:
    victim = await hub_client.make_user("mallory", balance=5_000_000)
    await hub_client.make_user("bob")
    tokens = await hub_client.login("mallory", "pw-mallory-secret")
    admin = await hub_client.admin_headers()
    resp = await hub_client.http.post("/v1/admin/users/mallory/disable", headers=admin)
    assert resp.status_code == 200
    assert resp.json()["disabled"] is True

    for headers in (victim, bearer(tokens)):
        read = await hub_client.http.get("/v1/balance", headers=headers)
        assert read.status_code == 401
        assert read.json()["error"]["code"] == "token_revoked"
        move = await hub_client.http.post(
            "/v1/transfers", json={"to": "bob", "amount": 1, "idempotency_key": "k1"}, headers=headers
        )
        assert move.status_code == 401
    assert (await refresh(hub_client.http, tokens["refresh_token"])).status_code == 401
    login = await hub_client.http.post(
        "/v1/auth/login", json={"username": "mallory", "password": "pw-mallory-secret"}
    )
    assert login.status_code == 401

    enabled = await hub_client.http.post("/v1/admin/users/mallory/enable", headers=admin)
    assert enabled.json()["disabled"] is False
    assert (await hub_client.http.get("/v1/balance", headers=victim)).status_code == 401  # still dead
    again = await hub_client.login("mallory", "pw-mallory-secret")
    assert (await hub_client.http.get("/v1/balance", headers=bearer(again))).json()["available"] == 5_000_000


async def test_revoke_sessions_ends_tokens_but_not_the_password(hub_client: HubClient) -> None:
    await hub_client.make_user("dora")
    tokens = await hub_client.login("dora", "pw-dora-secret")
    admin = await hub_client.admin_headers()
    resp = await hub_client.http.post("/v1/admin/users/dora/revoke-sessions", headers=admin)
    assert resp.status_code == 200 and resp.json()["disabled"] is False
    assert (await hub_client.http.get("/v1/me", headers=bearer(tokens))).status_code == 401
    assert (await refresh(hub_client.http, tokens["refresh_token"])).status_code == 401
    again = await hub_client.login("dora", "pw-dora-secret")
    assert (await hub_client.http.get("/v1/me", headers=bearer(again))).status_code == 200


async def test_a_deleted_user_recreated_under_the_same_name_is_a_new_user(hub_client: HubClient) -> None:
    await hub_client.make_user("carl", balance=3)
    old = await hub_client.login("carl", "pw-carl-secret")
    old_id = (await hub_client.http.get("/v1/me", headers=bearer(old))).json()["id"]
    admin = await hub_client.admin_headers()

    full = await hub_client.http.delete("/v1/admin/users/carl", headers=admin)
    assert full.status_code == 409
    assert full.json()["error"]["code"] == "account_not_empty"
    moved = await hub_client.http.post(
        "/v1/transfers", json={"to": "admin", "amount": 3, "idempotency_key": "empty"}, headers=bearer(old)
    )
    assert moved.status_code == 201
    assert (await hub_client.http.delete("/v1/admin/users/carl", headers=admin)).status_code == 204
    assert (await hub_client.http.get("/v1/me", headers=bearer(old))).status_code == 401
    gone = await hub_client.http.delete("/v1/admin/users/carl", headers=admin)
    assert gone.status_code == 404

    new_headers = await hub_client.make_user("carl")
    minted = await hub_client.http.post(
        "/v1/admin/mint", json={"to": "carl", "amount": 9, "idempotency_key": "new-carl"}, headers=admin
    )
    assert minted.status_code == 201
    me = await hub_client.http.get("/v1/me", headers=new_headers)
    assert me.json()["id"] != old_id
    for path in ("/v1/me", "/v1/balance"):
        resp = await hub_client.http.get(path, headers=bearer(old))
        assert resp.status_code == 401, path
        assert resp.json()["error"]["code"] == "token_revoked"
    spend = await hub_client.http.post(
        "/v1/transfers", json={"to": "admin", "amount": 9, "idempotency_key": "steal"}, headers=bearer(old)
    )
    assert spend.status_code == 401
    assert (await refresh(hub_client.http, old["refresh_token"])).status_code == 401
    assert (await hub_client.http.get("/v1/balance", headers=new_headers)).json()["available"] == 9


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/admin/users/{}/disable"),
        ("POST", "/v1/admin/users/{}/enable"),
        ("POST", "/v1/admin/users/{}/revoke-sessions"),
        ("DELETE", "/v1/admin/users/{}"),
    ],
)
async def test_user_management_is_for_admins_and_names_real_users(
    hub_client: HubClient, method: str, path: str
) -> None:
    user = await hub_client.make_user("plain")
    admin = await hub_client.admin_headers()
    denied = await hub_client.http.request(method, path.format("plain"), headers=user)
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "forbidden"
    missing = await hub_client.http.request(method, path.format("nobody"), headers=admin)
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == {"code", "message", "details"}
    assert (await hub_client.http.request(method, path.format("plain"))).status_code == 401


async def test_an_admin_cannot_disable_or_delete_their_own_user(hub_client: HubClient) -> None:
    admin = await hub_client.admin_headers()
    for method, path in (("POST", "/v1/admin/users/admin/disable"), ("DELETE", "/v1/admin/users/admin")):
        resp = await hub_client.http.request(method, path, headers=admin)
        assert resp.status_code == 409
        assert resp.json()["error"]["code"] == "own_user"
    assert (await hub_client.http.get("/v1/me", headers=admin)).status_code == 200


async def test_another_replica_refuses_a_disabled_users_token_within_the_cache_ttl(
    hub_client_factory: Callable[..., Awaitable[HubClient]], clock: FakeClock
) -> None:
    """Each replica keeps a user's state for GPUPOOL_HUB_USER_CACHE_SEC; the one that made the change
    knows at once, the others once their entry is older than that."""
    one = await hub_client_factory(user_cache_sec=5)
    two = await hub_client_factory(user_cache_sec=5)
    victim = await one.make_user("trent")
    assert (await two.http.get("/v1/me", headers=victim)).status_code == 200  # cached on two now
    admin = await one.admin_headers()
    assert (await one.http.post("/v1/admin/users/trent/disable", headers=admin)).status_code == 200
    assert (await one.http.get("/v1/me", headers=victim)).status_code == 401
    clock.advance(5)
    assert (await two.http.get("/v1/me", headers=victim)).status_code == 401


@pytest.mark.parametrize("name", ["Bad%20Name", "nul%00byte", "x"])
async def test_user_management_refuses_impossible_names_as_bad_input(
    hub_client: HubClient, name: str
) -> None:
    admin = await hub_client.admin_headers()
    resp = await hub_client.http.post(f"/v1/admin/users/{name}/disable", headers=admin)
    assert resp.status_code == 422
    assert resp.json()["error"]["details"]["field"] == "username"


@pytest.mark.parametrize("token", ["nul\u0000byte.secret", "0" * 24 + "\u0000.x", "a" * 24 + ".wrong"])
async def test_junk_refresh_tokens_are_401_on_every_backend(hub_client: HubClient, token: str) -> None:
    resp = await refresh(hub_client.http, token)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_token"
