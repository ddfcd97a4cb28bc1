"""The periodic pass with an injected clock: pruning, one runner across replicas, job metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gpupool import crypto
from gpupool.core.ports import FakeClock
from tests.conftest import HubClient
from tests.factories import registration

HubFactory = Callable[..., Awaitable[HubClient]]


async def test_prune_forgets_expired_sessions_and_old_replay_entries(
    hub_client: HubClient, clock: FakeClock
) -> None:
    body = registration(crypto.KeyPair.generate(), clock)
    token = (await hub_client.http.post("/v1/miners/register", json=body)).json()["session_token"]
    assert await hub_client.hub.prune() == (0, 0)  # nothing is old yet
    clock.advance(301)  # past SESSION_TTL_SEC and past twice the clock-skew window
    sessions, events = await hub_client.hub.prune()
    assert sessions == 1 and events == 1
    resp = await hub_client.http.post("/v1/miners/update", json={"session_token": token})
    assert resp.status_code == 401
    # A pruned event is still refused: it is older than the skew window, so it is stale.
    again = await hub_client.http.post("/v1/miners/register", json=body)
    assert again.status_code == 401 and again.json()["error"]["code"] == "stale_event"


async def test_a_singleton_job_runs_on_one_replica_per_interval(
    hub_client_factory: HubFactory, clock: FakeClock
) -> None:
    one, two = await hub_client_factory(), await hub_client_factory()
    runs: list[str] = []

    def job(name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            runs.append(name)

        return run

    await one.hub._singleton("demo", 300, job("one"))()
    await two.hub._singleton("demo", 300, job("two"))()
    assert runs == ["one"]
    clock.advance(300)
    await two.hub._singleton("demo", 300, job("two"))()
    await one.hub._singleton("demo", 300, job("one"))()
    assert runs == ["one", "two"]


async def test_maintenance_refreshes_pool_statistics(hub_client: HubClient, clock: FakeClock) -> None:
    for _ in range(2):
        await hub_client.http.post("/v1/miners/register", json=registration(crypto.KeyPair.generate(), clock))
    user = await hub_client.make_user("stats", balance=10_000_000)
    body = {
        "command": ["x"],
        "max_price_micro_per_ksec": 1,
        "timeout_sec": 10,
        "requirements": {"region": "mars"},
    }
    assert (await hub_client.http.post("/v1/tasks", json=body, headers=user)).status_code == 201
    await hub_client.hub.maintain()
    metrics = (await hub_client.http.get("/metrics")).text
    assert "poolhub_miners_online 2.0" in metrics
    assert 'poolhub_tasks{state="queued"} 1.0' in metrics
