"""Who the client is: forwarded headers count only from trusted proxies; bad node sessions are limited.

A client that rotates ``X-Forwarded-For`` must not get a fresh login budget per value, and a client
guessing node session tokens must be slowed down with 429 before each guess reaches the database.
"""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path

import httpx
import pytest

from gpupool import crypto
from gpupool.api.proxies import client_behind
from tests.conftest import ADMIN_PASSWORD, HubClient
from tests.factories import registration
from tests.procs import running_hub

PROXIES = [ip_network("10.0.0.0/8"), ip_network("fd00::/8")]


def headers(**values: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in values.items()]


@pytest.mark.parametrize(
    ("peer", "sent", "client"),
    [
        ("203.0.113.7", headers(x_forwarded_for="1.2.3.4"), "203.0.113.7"),  # not a proxy: ignored
        ("10.0.0.1", headers(x_forwarded_for="1.2.3.4"), "1.2.3.4"),
        ("10.0.0.1", headers(x_forwarded_for="6.6.6.6, 1.2.3.4"), "1.2.3.4"),  # the left part is the sender's
        ("10.0.0.1", headers(x_forwarded_for="6.6.6.6, 1.2.3.4, 10.0.0.9"), "1.2.3.4"),  # two proxies
        ("10.0.0.1", headers(x_forwarded_for="garbage, 10.0.0.9"), "10.0.0.9"),
        ("10.0.0.1", headers(x_forwarded_for="1.2.3.4:5555"), "1.2.3.4"),
        ("10.0.0.1", headers(forwarded='for="[2001:db8::1]:443";proto=https'), "2001:db8::1"),
        ("10.0.0.1", headers(forwarded="for=6.6.6.6, for=1.2.3.4", x_forwarded_for="9.9.9.9"), "1.2.3.4"),
        ("10.0.0.1", headers(forwarded="for=unknown"), "10.0.0.1"),
        ("10.0.0.1", [], "10.0.0.1"),
        ("fd00::5", headers(x_forwarded_for="2001:db8::7"), "2001:db8::7"),
    ],
)
def test_the_client_is_the_nearest_address_that_is_not_a_trusted_proxy(
    peer: str, sent: list[tuple[bytes, bytes]], client: str
) -> None:
    assert client_behind(peer, sent, PROXIES) == client


async def fail_login(hub: HubClient, username: str, forwarded_for: str) -> httpx.Response:
    return await hub.http.post(
        "/v1/auth/login",
        json={"username": username, "password": "wrong-guess"},
        headers={"X-Forwarded-For": forwarded_for},
    )


async def test_rotating_x_forwarded_for_does_not_reset_the_login_budget_by_default(
    hub_client: HubClient,
) -> None:
    for i in range(5):
        assert (await fail_login(hub_client, f"guess{i}", f"198.51.100.{i}")).status_code == 401
    locked = await fail_login(hub_client, "guess9", "198.51.100.99")
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) >= 1


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget(hub_client_factory) -> None:
    hub = await hub_client_factory(trusted_proxies="10.0.0.0/8")  # the test client is 10.0.0.1
    for i in range(5):
        assert (await fail_login(hub, f"guess{i}", "198.51.100.1")).status_code == 401
    assert (await fail_login(hub, "guess9", "198.51.100.1")).status_code == 429
    other = await hub.http.post(
        "/v1/auth/login",
        json={"username": "admin", "password": ADMIN_PASSWORD},
        headers={"Forwarded": "for=198.51.100.2"},
    )
    assert other.status_code == 200


async def test_bogus_lease_renewals_are_limited_with_retry_after(hub_client_factory) -> None:
    hub = await hub_client_factory(trusted_proxies="10.0.0.0/8", session_failure_limit="20/minute")
    attacker = {"X-Forwarded-For": "198.51.100.66"}
    for i in range(20):
        resp = await hub.http.get(
            "/v1/miners/lease/renew", params={"session_token": f"bogus-{i}"}, headers=attacker
        )
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "session_invalid"
    limited = await hub.http.get(
        "/v1/miners/lease/renew", params={"session_token": "bogus-x"}, headers=attacker
    )
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert set(limited.json()["error"]) == {"code", "message", "details"}
    for path, body in (
        ("/v1/miners/update", {"session_token": "bogus", "queue_len": 0}),
        ("/v1/miners/logout", {"session_token": "bogus"}),
    ):
        assert (await hub.http.post(path, json=body, headers=attacker)).status_code == 429
    # Another client is not punished for the attacker's guesses.
    other = await hub.http.get(
        "/v1/miners/lease/renew",
        params={"session_token": "bogus"},
        headers={"X-Forwarded-For": "198.51.100.7"},
    )
    assert other.status_code == 401


async def test_a_live_nodes_renewals_never_spend_the_bad_session_budget(hub_client_factory, clock) -> None:
    """The node's token is in memory: its renewals are not lookups, so a client address that other
    bad tokens exhausted (a shared NAT) still renews its own live sessions."""
    hub = await hub_client_factory(session_failure_limit="3/minute")
    resp = await hub.http.post("/v1/miners/register", json=registration(crypto.KeyPair.generate(), clock))
    assert resp.status_code == 200, resp.text
    token = resp.json()["session_token"]
    for i in range(3):
        bogus = await hub.http.get("/v1/miners/lease/renew", params={"session_token": f"bogus-{i}"})
        assert bogus.status_code == 401
    assert (
        await hub.http.get("/v1/miners/lease/renew", params={"session_token": "bogus"})
    ).status_code == 429
    for _ in range(5):
        renewed = await hub.http.get("/v1/miners/lease/renew", params={"session_token": token})
        assert renewed.status_code == 200, renewed.text


def test_a_hub_process_takes_no_forwarded_address_from_a_local_client(tmp_path: Path) -> None:
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 by default; ``gpupool hub`` must not."""
    with running_hub(tmp_path) as hub, httpx.Client(base_url=hub.url, timeout=10) as http:
        for i in range(5):
            resp = http.post(
                "/v1/auth/login",
                json={"username": f"guess{i}", "password": "wrong-guess"},
                headers={"X-Forwarded-For": f"198.51.100.{i}"},
            )
            assert resp.status_code == 401
        locked = http.post(
            "/v1/auth/login",
            json={"username": "admin", "password": ADMIN_PASSWORD},
            headers={"X-Forwarded-For": "198.51.100.200"},
        )
        assert locked.status_code == 429
        statuses = {
            http.get("/v1/miners/lease/renew", params={"session_token": f"bogus-{i}"}).status_code
            for i in range(60)
        }
        assert statuses == {401, 429}
