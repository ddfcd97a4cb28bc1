"""Users, login, tokens and roles through the real app on SQLite and PostgreSQL."""

from __future__ import annotations

import jwt
import pytest

from gpupool.core.ports import FakeClock
from tests.conftest import ADMIN_PASSWORD, HubClient


async def test_login_returns_bearer_pair_and_me_names_the_user(hub_client: HubClient) -> None:
    await hub_client.make_user("alice")
    tokens = await hub_client.login("alice", "pw-alice-secret")
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 3600
    resp = await hub_client.http.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert resp.status_code == 200
    assert resp.json() == {
        "id": resp.json()["id"],
        "username": "alice",
        "role": "user",
        "account": "user:alice",
    }


async def test_first_start_creates_admin_with_given_password(hub_client: HubClient) -> None:
    tokens = await hub_client.login("admin", ADMIN_PASSWORD)
    me = await hub_client.http.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.json()["role"] == "admin"


async def test_admin_password_is_generated_and_printed_once_when_not_given(
    hub_client_factory, capsys: pytest.CaptureFixture[str]
) -> None:
    client = await hub_client_factory(admin_password=None)
    printed = capsys.readouterr().err
    assert "created user 'admin' with password: " in printed
    password = printed.split("password: ", 1)[1].split()[0]
    await client.login("admin", password)
    await client.hub.start()  # a second start finds the admin and prints nothing
    assert "password" not in capsys.readouterr().err


async def test_wrong_password_and_unknown_user_look_the_same(hub_client: HubClient) -> None:
    await hub_client.make_user("bob")
    wrong = await hub_client.http.post("/v1/auth/login", json={"username": "bob", "password": "nope-nope"})
    unknown = await hub_client.http.post(
        "/v1/auth/login", json={"username": "ghost", "password": "nope-nope"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"]["code"] == unknown.json()["error"]["code"] == "invalid_credentials"
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]


async def test_repeated_failures_lock_the_username_with_retry_after(hub_client: HubClient) -> None:
    await hub_client.make_user("carol")
    for _ in range(5):
        resp = await hub_client.http.post(
            "/v1/auth/login", json={"username": "carol", "password": "bad-guess"}
        )
        assert resp.status_code == 401
    locked = await hub_client.http.post(
        "/v1/auth/login", json={"username": "carol", "password": "pw-carol-secret"}
    )
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) >= 1
    assert locked.json()["error"]["code"] == "rate_limited"


async def test_failures_across_usernames_lock_the_client(hub_client: HubClient) -> None:
    for i in range(5):
        resp = await hub_client.http.post(
            "/v1/auth/login", json={"username": f"u{i}x", "password": "bad-guess"}
        )
        assert resp.status_code == 401
    resp = await hub_client.http.post(
        "/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert resp.status_code == 429


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "unauthenticated"),
        ({"Authorization": "Bearer not-a-jwt"}, "invalid_token"),
        ({"Authorization": "Basic YWRtaW46eA=="}, "unauthenticated"),
    ],
)
async def test_bad_credentials_are_401(hub_client: HubClient, headers: dict[str, str], code: str) -> None:
    resp = await hub_client.http.get("/v1/me", headers=headers)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == code


async def test_token_signed_with_another_secret_is_refused(hub_client: HubClient) -> None:
    forged = jwt.encode(
        {"sub": "1", "name": "admin", "role": "admin", "typ": "access", "exp": 4102444800},
        "some-other-secret-of-sufficient-length-123",
        algorithm="HS256",
    )
    resp = await hub_client.http.get("/v1/me", headers={"Authorization": f"Bearer {forged}"})
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_token"


async def test_access_token_expires_after_token_expiry(hub_client: HubClient, clock: FakeClock) -> None:
    headers = await hub_client.make_user("dave")
    assert (await hub_client.http.get("/v1/me", headers=headers)).status_code == 200
    clock.advance(3601)
    resp = await hub_client.http.get("/v1/me", headers=headers)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "token_expired"


async def test_refresh_rotates_and_reuse_revokes_the_family(hub_client: HubClient) -> None:
    await hub_client.make_user("erin")
    first = await hub_client.login("erin", "pw-erin-secret")
    second = await hub_client.http.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    assert second.json()["refresh_token"] != first["refresh_token"]
    me = await hub_client.http.get(
        "/v1/me", headers={"Authorization": f"Bearer {second.json()['access_token']}"}
    )
    assert me.json()["username"] == "erin"

    reuse = await hub_client.http.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    assert reuse.json()["error"]["code"] == "refresh_token_reused"
    # The legitimate-looking newer token of the same family is dead too.
    third = await hub_client.http.post(
        "/v1/auth/refresh", json={"refresh_token": second.json()["refresh_token"]}
    )
    assert third.status_code == 401
    # A fresh login starts a new family that works.
    fresh = await hub_client.login("erin", "pw-erin-secret")
    ok = await hub_client.http.post("/v1/auth/refresh", json={"refresh_token": fresh["refresh_token"]})
    assert ok.status_code == 200


@pytest.mark.parametrize("token", ["garbage", "abc.def", "", "x" * 300])
async def test_malformed_refresh_tokens_are_refused(hub_client: HubClient, token: str) -> None:
    resp = await hub_client.http.post("/v1/auth/refresh", json={"refresh_token": token})
    assert resp.status_code in (401, 422)
    assert resp.json()["error"]["code"] in ("invalid_token", "invalid_input")


async def test_refresh_token_expires(hub_client: HubClient, clock: FakeClock) -> None:
    await hub_client.make_user("fay")
    tokens = await hub_client.login("fay", "pw-fay-secret")
    clock.advance(31 * 86400)
    resp = await hub_client.http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "token_expired"


async def test_only_admin_creates_users_and_roles_are_checked(hub_client: HubClient) -> None:
    user = await hub_client.make_user("gus")
    body = {"username": "newbie", "password": "long-enough-pw", "role": "user"}
    assert (await hub_client.http.post("/v1/users", json=body, headers=user)).status_code == 403
    admin = await hub_client.admin_headers()
    bad_role = await hub_client.http.post("/v1/users", json={**body, "role": "root"}, headers=admin)
    assert bad_role.status_code == 422
    assert bad_role.json()["error"]["details"]["field"] == "role"
    assert (await hub_client.http.post("/v1/users", json=body, headers=admin)).status_code == 201
    dup = await hub_client.http.post("/v1/users", json=body, headers=admin)
    assert dup.status_code == 409
    assert dup.json()["error"]["code"] == "user_exists"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "long-enough-pw"}, "username"),
        ({"username": "ok-name"}, "password"),
        ({"username": "ok-name", "password": "short"}, "password"),
        ({"username": "Bad Name!", "password": "long-enough-pw"}, "username"),
        ({"username": 12, "password": "long-enough-pw"}, "username"),
    ],
)
async def test_create_user_bad_input_names_the_field(
    hub_client: HubClient, body: dict[str, object], field: str
) -> None:
    admin = await hub_client.admin_headers()
    resp = await hub_client.http.post("/v1/users", json=body, headers=admin)
    assert resp.status_code == 422
    assert resp.json()["error"]["details"]["field"] == field
