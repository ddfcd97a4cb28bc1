"""The node's one hub client and its one retry policy, against the real hub served in-process."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from gpupool import crypto
from gpupool.config import NodeSettings
from gpupool.core.ports import FakeClock
from gpupool.node.agent import NodeAgent
from gpupool.node.hub_client import Backoff, HubClient, Reauthenticate, Retry, decide, retry_after_s
from tests.conftest import LiveHub, free_port
from tests.factories import OWNER, registration


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())  # signed bodies are checked against the wall clock's skew window


class Sleeps:
    """Records each wait the policy chose, and waits it (short in these tests)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(seconds)


@pytest.mark.parametrize(
    ("status", "header", "expected"),
    [
        (None, None, Retry),  # no answer: network error
        (500, None, Retry),
        (502, None, Retry),
        (503, "7", Retry),
        (429, None, Retry),
        (401, None, Reauthenticate),
        (200, None, type(None)),
        (403, None, type(None)),
        (404, None, type(None)),
        (409, None, type(None)),
        (422, None, type(None)),
    ],
)
def test_the_policy_retries_network_errors_5xx_and_429_and_reauthenticates_on_401(
    status: int | None, header: str | None, expected: type
) -> None:
    assert isinstance(decide(status, header, Backoff(), time.time()), expected)


def test_backoff_grows_with_jitter_up_to_its_cap() -> None:
    backoff = Backoff(base_s=0.5, max_s=4.0)
    waits = [backoff.next() for _ in range(8)]
    for attempt, wait in enumerate(waits):
        cap = min(4.0, 0.5 * 2**attempt)
        assert cap / 2 <= wait <= cap
    backoff.reset()
    assert backoff.next() <= 0.5


def test_retry_after_in_seconds_or_as_a_date_bounded() -> None:
    now = 1_000_000.0
    assert retry_after_s("3", now, fallback_s=9, max_s=60) == 3
    assert retry_after_s("-5", now, fallback_s=9, max_s=60) == 0
    assert retry_after_s("100000", now, fallback_s=9, max_s=60) == 60
    assert retry_after_s("soon", now, fallback_s=9, max_s=60) == 9
    assert retry_after_s(None, now, fallback_s=9, max_s=60) == 9
    date = email.utils.formatdate(now + 20, usegmt=True)
    assert retry_after_s(date, now, fallback_s=9, max_s=60) == pytest.approx(20, abs=1)
    assert decide(429, "2", Backoff(), now) == Retry(2.0)


async def test_429_waits_what_retry_after_says_then_goes_through(
    live_hub_factory: Callable[..., Awaitable[LiveHub]], clock: FakeClock
) -> None:
    hub = await live_hub_factory(rate_limit="1/second")
    sleeps = Sleeps()
    async with HubClient(hub.url, sleep=sleeps) as client:
        first = await client.request(
            "POST", "/v1/miners/register", json=registration(crypto.KeyPair.generate(), clock)
        )
        assert first.status_code == 200
        second = await client.request(
            "POST", "/v1/miners/register", json=registration(crypto.KeyPair.generate(), clock)
        )
    assert second.status_code == 200  # refused once with 429, then taken
    assert len(sleeps.waits) == 1 and 0 < sleeps.waits[0] <= 1.0  # Retry-After: 1


async def test_network_errors_are_retried_with_backoff_then_raised(tmp_path: Path) -> None:
    sleeps = Sleeps()
    async with HubClient(f"http://127.0.0.1:{free_port()}", sleep=sleeps, backoff_max_s=0.2) as client:
        with pytest.raises(httpx.ConnectError):
            await client.request("GET", "/v1/health", attempts=3)
    assert len(sleeps.waits) == 2 and all(0 < w <= 0.2 for w in sleeps.waits)


async def test_a_hub_that_comes_up_late_is_reached(
    live_hub_factory: Callable[..., Awaitable[LiveHub]],
) -> None:
    """The first tries meet a closed port; the hub then starts there and the request goes through."""
    hub = await live_hub_factory()
    await hub.stop()
    sleeps = Sleeps()
    started: list[asyncio.Task[None]] = []

    async def sleep_then_start(seconds: float) -> None:
        await sleeps(seconds)
        if len(sleeps.waits) == 2:  # after two refused connections, bring the same hub back
            started.append(asyncio.create_task(hub.server.serve()))
            while not hub.server.started:
                await asyncio.sleep(0.01)

    hub.server.should_exit, hub.server.started = False, False
    async with HubClient(hub.url, sleep=sleep_then_start, backoff_max_s=0.2) as client:
        resp = await client.request("GET", "/v1/health", attempts=10)
    assert resp.status_code == 200 and len(sleeps.waits) == 2
    hub.task = started[0]


async def test_401_registers_again_once_and_resends(
    live_hub_factory: Callable[..., Awaitable[LiveHub]], tmp_path: Path
) -> None:
    hub = await live_hub_factory()
    settings = NodeSettings(registry_url=hub.url, owner_address=OWNER, data_dir=tmp_path)
    agent = NodeAgent(settings, hub.url, OWNER, crypto.KeyPair.generate())
    async with HubClient(hub.url) as client:
        agent.attach(client)
        await agent.register(client)
        old = agent.session_token
        gone = await hub.http.post("/v1/miners/logout", json={"session_token": old})
        assert gone.status_code == 204  # the hub forgot the session: its token now answers 401
        resp = await client.request("GET", "/v1/tasks/no-such-task/bundle")
        assert agent.session_token != old  # registered again, and the request went with the new token
        assert resp.status_code in (403, 404)
        # Refused again after that one registration, the answer is the caller's: no loop.
        await hub.http.post("/v1/miners/logout", json={"session_token": agent.session_token})
        client.reauthenticate = None
        assert (await client.request("GET", "/v1/tasks/no-such-task/bundle")).status_code == 401
