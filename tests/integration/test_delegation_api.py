"""The delegation HTTP API (SPEC §5) in-process: auth, limit, draining polls, stop, expiry, status."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from typer.testing import CliRunner

from gpupool import crypto
from gpupool.cli.app import app as cli_app
from gpupool.config import DelegationSettings
from gpupool.core.poc import PARAMS_TINY, Batch
from gpupool.core.ports import FakeClock
from gpupool.delegation.app import create_delegation_app
from gpupool.pow.delegation_client import DelegationClient
from tests.pow_helpers import BLOCK_HASH, ScriptedFactory, tiny_round

TOKEN = "my-secure-token-123"
SMALL = crypto.KeyPair.generate()
P = "/api/v1/delegation"


def start_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "node_id": 0,
        "node_count": 1,
        "block_hash": BLOCK_HASH,
        "block_height": 7,
        "public_key": SMALL.pubkey,
        "batch_size": 32,
        "r_target": 1.4013564660458173,
        "fraud_threshold": 1e-7,
        "params": PARAMS_TINY.to_dict(),
        "auth_token": TOKEN,
    }
    body.update(fields)
    return body


Make = Callable[..., Any]


@pytest.fixture
async def big_node(clock: FakeClock) -> AsyncIterator[Make]:
    """A factory of (client, scripted factory, app) over the real delegation app."""
    managers: list[LifespanManager] = []

    async def make(**settings: Any) -> tuple[httpx.AsyncClient, ScriptedFactory, Any]:
        factory = ScriptedFactory(gpu_count=settings.pop("gpu_count", 8))
        app = create_delegation_app(
            DelegationSettings(auth_token=TOKEN, **settings), factory=factory, clock=clock.now
        )
        lifespan = LifespanManager(app)
        await lifespan.__aenter__()
        managers.append(lifespan)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=lifespan.app), base_url="http://big")
        return client, factory, app

    yield make
    for lifespan in managers:
        await lifespan.__aexit__(None, None, None)


async def test_wrong_or_missing_token_is_401_invalid_auth_token_everywhere(big_node: Make) -> None:
    client, factory, _ = await big_node()
    for token in ("wrong", ""):
        resp = await client.post(f"{P}/start", json=start_body(auth_token=token))
        assert resp.status_code == 401 and resp.json()["detail"] == "Invalid auth token"
    no_token = start_body()
    del no_token["auth_token"]
    resp = await client.post(f"{P}/start", json=no_token)
    assert resp.status_code == 401 and resp.json()["detail"] == "Invalid auth token"
    assert factory.made == []  # nothing started for a refused request

    sid = (await client.post(f"{P}/start", json=start_body())).json()["session_id"]
    for kwargs in (
        {"params": {"auth_token": "wrong"}},
        {"headers": {"Authorization": "Bearer wrong"}},
        {},
    ):
        resp = await client.get(f"{P}/batches/{sid}", **kwargs)
        assert resp.status_code == 401 and resp.json()["detail"] == "Invalid auth token"
    resp = await client.post(f"{P}/stop", json={"session_id": sid, "auth_token": "wrong"})
    assert resp.status_code == 401 and resp.json()["detail"] == "Invalid auth token"
    assert factory.made[0].stopped is False


async def test_start_poll_drain_and_stop_with_the_spec_fields(big_node: Make) -> None:
    client, factory, _ = await big_node(gpu_count=100)
    resp = await client.post(f"{P}/start", json=start_body())
    assert resp.status_code == 200
    started = resp.json()
    assert set(started) == {"session_id", "status", "message", "gpu_count"}
    assert started["status"] == "generating" and started["gpu_count"] == 100
    sid = started["session_id"]
    gen = factory.made[0]
    made = gen.produce(2)

    first = (await client.get(f"{P}/batches/{sid}", params={"auth_token": TOKEN})).json()
    assert {"session_id", "batches", "session_active", "status", "total_batches_generated"} <= set(first)
    assert first["session_active"] is True and first["status"] == "generating"
    assert [Batch.from_dict(b) for b in first["batches"]] == made
    assert first["total_batches_generated"] == 2
    assert first["batches"][0]["public_key"] == SMALL.pubkey and "sig_event" not in first["batches"][0]

    bearer = {"Authorization": f"Bearer {TOKEN}"}
    second = (await client.get(f"{P}/batches/{sid}", headers=bearer)).json()
    assert second["batches"] == [] and second["total_batches_generated"] == 2
    more = gen.produce(1)
    third = (await client.get(f"{P}/batches/{sid}", headers=bearer)).json()
    assert [Batch.from_dict(b) for b in third["batches"]] == more

    resp = await client.post(f"{P}/stop", json={"session_id": sid, "auth_token": TOKEN})
    stopped = resp.json()
    assert set(stopped) == {"session_id", "status", "message", "total_batches_generated"}
    assert stopped["status"] == "stopped" and stopped["total_batches_generated"] == 3 and gen.stopped
    after = (await client.get(f"{P}/batches/{sid}", headers=bearer)).json()
    assert after["session_active"] is False and after["status"] == "stopped"


async def test_over_the_limit_is_429(big_node: Make) -> None:
    client, _, _ = await big_node(max_sessions=2)
    for _ in range(2):
        assert (await client.post(f"{P}/start", json=start_body())).status_code == 200
    resp = await client.post(f"{P}/start", json=start_body())
    assert resp.status_code == 429 and "Maximum number of sessions" in resp.json()["detail"]
    assert int(resp.headers["Retry-After"]) > 0


async def test_sessions_expire_after_330_s_and_are_cleaned_up(big_node: Make, clock: FakeClock) -> None:
    client, factory, app = await big_node(max_sessions=1, retain_sec=30)
    sid = (await client.post(f"{P}/start", json=start_body())).json()["session_id"]
    clock.advance(330)
    app.state.manager.sweep_and_stop()  # what the service's sweeper runs every couple of seconds
    assert factory.made[0].stopped
    status = (await client.get(f"{P}/status")).json()
    assert status["sessions"][sid]["status"] == "expired" and status["active_sessions"] == 0
    polled = (await client.get(f"{P}/batches/{sid}", params={"auth_token": TOKEN})).json()
    assert polled["session_active"] is False and polled["status"] == "expired"
    assert (await client.post(f"{P}/start", json=start_body())).status_code == 200
    clock.advance(30)
    app.state.manager.sweep_and_stop()
    resp = await client.get(f"{P}/batches/{sid}", params={"auth_token": TOKEN})
    assert resp.status_code == 404 and resp.json()["detail"] == "Session not found"


async def test_status_fields(big_node: Make, clock: FakeClock) -> None:
    client, factory, _ = await big_node(max_sessions=10, gpu_count=100)
    sid = (await client.post(f"{P}/start", json=start_body(node_id=2, node_count=3))).json()["session_id"]
    factory.made[0].produce(1)
    clock.advance(120.5)
    status = (await client.get(f"{P}/status")).json()
    assert (status["total_sessions"], status["active_sessions"], status["max_sessions"]) == (1, 1, 10)
    assert status["sessions"][sid] == {
        "status": "generating",
        "node_id": 2,
        "gpu_count": 100,
        "total_generated": 1,
        "created_at": clock.now() - 120.5,
        "age_seconds": 120.5,
    }


async def test_bad_rounds_are_422_and_unknown_sessions_404(big_node: Make) -> None:
    client, factory, _ = await big_node()
    for bad in (
        {"node_id": 3, "node_count": 3},
        {"public_key": "not-a-key"},
        {"params": "v9"},
        {"batch_size": 0},
        {"block_hash": ""},
    ):
        resp = await client.post(f"{P}/start", json=start_body(**bad))
        assert resp.status_code == 422, bad
    resp = await client.post(f"{P}/start", json={"auth_token": TOKEN})
    assert resp.status_code == 422 and "block_hash" in resp.json()["detail"]
    assert factory.made == []
    resp = await client.get(f"{P}/batches/nope", params={"auth_token": TOKEN})
    assert resp.status_code == 404


async def test_client_restarts_an_expired_session_and_reads_every_batch(
    big_node: Make, clock: FakeClock
) -> None:
    big, factory, app = await big_node()
    client = DelegationClient(big, TOKEN, tiny_round(SMALL.pubkey))
    assert await client.fetch() == [] and client.sessions_started == 1 and client.gpu_count == 8
    first = factory.made[0].produce(1)
    clock.advance(330)
    app.state.manager.sweep_and_stop()
    assert await client.fetch() == first  # the last batches of the expired session still arrive
    assert client.session_id is None
    await client.fetch()  # a fresh session
    assert client.sessions_started == 2 and len(factory.made) == 2 and not factory.made[1].stopped
    await client.close()
    assert factory.made[1].stopped


async def test_client_with_a_wrong_token_gets_the_reference_message(big_node: Make) -> None:
    from gpupool.errors import TokenInvalid

    big, _, _ = await big_node()
    client = DelegationClient(big, "wrong", tiny_round(SMALL.pubkey))
    with pytest.raises(TokenInvalid, match="Invalid auth token"):
        await client.fetch()


def test_serve_without_a_token_exits_2_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DELEGATION_AUTH_TOKEN", raising=False)
    monkeypatch.chdir("/")  # no .env in reach
    result = CliRunner().invoke(cli_app, ["delegate", "serve"])
    assert result.exit_code == 2
    assert "DELEGATION_AUTH_TOKEN environment variable is required" in result.output
