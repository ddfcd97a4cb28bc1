"""Delegation against the fork as it is (SPEC §8.3), both ways.

The fork's big node (vedenij/small at 2399d16, ``pow/service/delegation/routes.py``) serves ``/start``,
``/batches/{id}``, ``/stop``, ``/status`` at its root, reads the token only from ``?auth_token=`` and
answers every refusal with 400 and a ``detail``. ``ForkForm`` serves *our* delegation app that way (the
routes' bodies stay ours), and our client must work against it. The other way round, the fork's small
node client (``delegation/client.py``) sends ``/api/v1/delegation/*`` with the token only in the query;
its requests, byte for byte as its pydantic models dump them, must work against our server in both forms.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from gpupool.config import DelegationSettings
from gpupool.core.poc import PARAMS_TINY
from gpupool.core.ports import FakeClock
from gpupool.delegation.app import create_delegation_app
from gpupool.errors import TokenInvalid, Unavailable
from gpupool.pow.delegation_client import DelegationClient
from tests.callback_server import gonka_key_forms
from tests.pow_helpers import BLOCK_HASH, ScriptedFactory, tiny_round

TOKEN = "fork-wire-token"
KEY = gonka_key_forms()["hex66"]
FORK_STATUSES = {"initializing", "generating", "stopped", "expired", "error"}

Scope = dict[str, Any]


class ForkForm:
    """An ASGI wrapper: our app behind the fork's paths, token rule and 400s."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith("/api/v1/delegation"):
            await _reply(send, 404, {"detail": "Not Found"})
            return
        query = scope.get("query_string", b"")
        if path.startswith("/batches/") and b"auth_token=" not in query:
            missing = [{"type": "missing", "loc": ["query", "auth_token"], "msg": "Field required"}]
            await _reply(send, 422, {"detail": missing})
            return
        headers = [(k, v) for k, v in scope["headers"] if k != b"authorization"]  # the query only
        held: list[dict[str, Any]] = []

        async def hold(message: dict[str, Any]) -> None:
            held.append(message)

        await self.app({**scope, "headers": headers}, receive, hold)
        status = held[0]["status"]
        if status in (401, 404, 429):
            body = json.loads(b"".join(m.get("body", b"") for m in held[1:]))
            detail = {401: "Invalid auth token", 404: f"Session {path.rsplit('/', 1)[-1]} not found"}.get(
                status, body["detail"]
            )
            await _reply(send, 400, {"detail": detail})
            return
        for message in held:
            await send(message)


async def _reply(send: Any, status: int, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})


@pytest.fixture
async def ours(clock: FakeClock) -> AsyncIterator[tuple[Any, ScriptedFactory]]:
    factory = ScriptedFactory(gpu_count=2)
    settings = DelegationSettings(auth_token=TOKEN, max_sessions=1, retain_sec=0)
    app = create_delegation_app(settings, factory=factory, clock=clock.now)
    factory.manager = app.state.manager  # type: ignore[attr-defined]
    async with LifespanManager(app) as lifespan:
        yield lifespan.app, factory


def client_for(app: Any, seen: list[httpx.Request]) -> httpx.AsyncClient:
    async def record(request: httpx.Request) -> None:
        seen.append(request)

    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://big", event_hooks={"request": [record]})


async def test_our_client_finds_the_forks_root_paths_and_passes_its_token_rule(
    ours: tuple[Any, ScriptedFactory],
) -> None:
    app, factory = ours
    seen: list[httpx.Request] = []
    client = DelegationClient(client_for(ForkForm(app), seen), TOKEN, tiny_round(KEY, batch_size=16))
    await client.open()
    assert client.prefix == "" and client.gpu_count == 2
    assert [r.url.path for r in seen] == ["/api/v1/delegation/start", "/start"]
    made = factory.made[0].produce(steps=3)
    got = await client.fetch()
    assert [b.nonces for b in got] == [b.nonces for b in made] and all(b.public_key == KEY for b in got)
    poll = seen[-1]
    assert poll.url.path.startswith("/batches/") and poll.url.params["auth_token"] == TOKEN
    await client.close()
    assert seen[-1].url.path == "/stop" and client.session_status == "stopped"
    status = (await client_for(app, []).get("/status")).json()
    assert status["active_sessions"] == 0


async def test_the_forks_400s_are_read_by_their_detail(
    ours: tuple[Any, ScriptedFactory], clock: FakeClock
) -> None:
    app, factory = ours
    fork = ForkForm(app)
    wrong = DelegationClient(client_for(fork, []), "not-the-token", tiny_round(KEY))
    with pytest.raises(TokenInvalid):
        await wrong.open()

    first = DelegationClient(client_for(fork, []), TOKEN, tiny_round(KEY))
    await first.open()
    second = DelegationClient(client_for(fork, []), TOKEN, tiny_round(KEY))
    with pytest.raises(Unavailable, match="400"):
        await second.open()  # the fork's "Maximum sessions" 400: retried later, not a crash

    manager = factory.manager  # type: ignore[attr-defined]
    manager.stop(first.session_id)
    manager.sweep_and_stop()  # retain_sec=0: the big node forgets the ended session
    assert await first.fetch() == [] and first.session_id is None  # "Session … not found" (400)
    await first.fetch()
    assert first.sessions_started == 2 and first.session_id is not None and len(factory.made) == 2


async def test_our_client_uses_our_prefix_when_it_is_there(ours: tuple[Any, ScriptedFactory]) -> None:
    app, _ = ours
    seen: list[httpx.Request] = []
    client = DelegationClient(client_for(app, seen), TOKEN, tiny_round(KEY))
    await client.open()
    await client.fetch()
    assert client.prefix == "/api/v1/delegation" and len(seen) == 2
    poll = seen[-1]
    assert poll.headers["authorization"] == f"Bearer {TOKEN}" and poll.url.params["auth_token"] == TOKEN
    await client.close()


def fork_start_request() -> dict[str, Any]:
    """``DelegationStartRequest(...).model_dump()`` as the fork's small node sends it."""
    return {
        "node_id": 0,
        "node_count": 1,
        "block_hash": BLOCK_HASH,
        "block_height": 7,
        "public_key": KEY,
        "batch_size": 100,
        "r_target": 1.4013564660458173,
        "fraud_threshold": 1e-7,
        "params": PARAMS_TINY.to_dict(),
        "auth_token": TOKEN,
        "callback_url": None,
    }


@pytest.mark.parametrize("prefix", ["/api/v1/delegation", ""])
async def test_the_forks_client_requests_work_against_our_server(
    ours: tuple[Any, ScriptedFactory], prefix: str
) -> None:
    app, factory = ours
    async with client_for(app, []) as http:
        start = await http.post(f"{prefix}/start", json=fork_start_request())
        assert start.status_code == 200, start.text
        body = start.json()
        assert {"session_id", "status", "message", "gpu_count"} <= set(body) and body[
            "status"
        ] in FORK_STATUSES
        sid = body["session_id"]
        factory.made[-1].produce(steps=2)
        poll = await http.get(f"{prefix}/batches/{sid}", params={"auth_token": TOKEN})  # no header
        assert poll.status_code == 200, poll.text
        got = poll.json()
        assert {"session_id", "batches", "session_active", "status", "total_batches_generated"} <= set(got)
        assert got["session_active"] is True and got["status"] in FORK_STATUSES
        for batch in got["batches"]:
            assert set(batch) == {"public_key", "block_hash", "block_height", "nonces", "dist", "node_id"}
            assert batch["public_key"] == KEY
        bad = await http.get(f"{prefix}/batches/{sid}", params={"auth_token": "wrong"})
        assert bad.status_code == 401 and bad.json()["detail"] == "Invalid auth token"
        stop = await http.post(f"{prefix}/stop", json={"session_id": sid, "auth_token": TOKEN})
        assert stop.status_code == 200
        assert {"session_id", "status", "message", "total_batches_generated"} <= set(stop.json())
        status = (await http.get(f"{prefix}/status")).json()
        assert {"total_sessions", "active_sessions", "max_sessions", "sessions"} <= set(status)
