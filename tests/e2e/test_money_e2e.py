"""The money path against a real hub process: lying, quitting, silent and deaf nodes, and a node
SIGKILLed and restarted. The lying and silent nodes are played by the test over the real protocol
(a real node agent never lies); the restarted one is the real agent, which lists what it runs."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpupool.core import rewards
from gpupool.core.ports import SystemClock
from gpupool.core.rewards import gpu_score
from gpupool.core.scheduling import charge_for_usage
from tests.conftest import ADMIN_PASSWORD
from tests.factories import OTHER_OWNER, OWNER
from tests.procs import HubProcess, NodeProcess
from tests.simnode import PRICE, SimNode

pytestmark = pytest.mark.slow
CAP = 3_000_000
TOLERANCE = 0.02
HUB_ENV = {
    "GPUPOOL_HUB_HEARTBEAT_INTERVAL_SEC": "0.5",
    "HEARTBEAT_GRACE_SEC": "3",
    "GPUPOOL_HUB_DISPATCH_TIMEOUT_SEC": "2",
    "GPUPOOL_HUB_STOP_GRACE_SEC": "2",
    "GPUPOOL_HUB_TIMEOUT_GRACE_SEC": "1",
    "GPUPOOL_HUB_USAGE_TOLERANCE": str(TOLERANCE),
    "GPUPOOL_HUB_REWARD_AUTO_DISTRIBUTE": "false",
    "REWARD_EPOCH_SEC": "6",
}
EPOCH_SEC = 6
EMISSION = 100_000_000  # BASE_REWARD's default
H100 = "NVIDIA H100 80GB HBM3"


@dataclass
class RemoteHub:
    """What ``SimNode`` needs of a hub: an HTTP client on it and its WebSocket address."""

    http: httpx.AsyncClient
    ws_url: str


@dataclass
class Pool:
    hub: HubProcess
    remote: RemoteHub
    admin: dict[str, str]
    user: dict[str, str]
    beating: list[SimNode]

    def node(self, miner_id: str, **fields: Any) -> SimNode:
        return SimNode(self.remote, SystemClock(), miner_id, **fields)  # type: ignore[arg-type]

    async def join(self, node: SimNode) -> SimNode:
        await node.connect()
        self.beating.append(node)
        return node

    async def submit(self, **over: Any) -> str:
        body = {"command": ["work"], "max_price_micro_per_ksec": CAP, "timeout_sec": 60, **over}
        resp = await self.remote.http.post("/v1/tasks", json=body, headers=self.user)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["task_id"])

    async def task(self, task_id: str) -> dict[str, Any]:
        body: dict[str, Any] = (await self.remote.http.get(f"/v1/tasks/{task_id}", headers=self.user)).json()
        return body

    async def balance(self) -> dict[str, Any]:
        body: dict[str, Any] = (await self.remote.http.get("/v1/balance", headers=self.user)).json()
        return body

    async def books_balance(self) -> bool:
        resp = await self.remote.http.get("/v1/admin/ledger/trial-balance", headers=self.admin)
        return bool(resp.json()["balanced"])


async def wait_for(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> float:
    """Seconds until ``check`` holds; fails after ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout_s}s")


async def _beat_forever(nodes: list[SimNode]) -> None:
    while True:
        for node in list(nodes):
            with contextlib.suppress(Exception):
                await node.beat()
        await asyncio.sleep(0.5)


@pytest.fixture
def hub_env() -> dict[str, str]:
    """The hub's settings; a test parametrizes this name to change them."""
    return HUB_ENV


@pytest.fixture
async def pool(tmp_path: Path, hub_env: dict[str, str]) -> AsyncIterator[Pool]:
    hub = HubProcess(f"sqlite:///{tmp_path}/hub.db", tmp_path, **hub_env)
    hub.start()
    http = httpx.AsyncClient(base_url=hub.url, timeout=10)
    beating: list[SimNode] = []
    beats = asyncio.create_task(_beat_forever(beating))
    try:
        token = (
            await http.post("/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        ).json()["access_token"]
        admin = {"Authorization": f"Bearer {token}"}
        await http.post(
            "/v1/users", json={"username": "bob", "password": "bob-password", "role": "user"}, headers=admin
        )
        await http.post(
            "/v1/admin/mint", json={"to": "bob", "amount": 50_000_000, "idempotency_key": "f"}, headers=admin
        )
        login = await http.post("/v1/auth/login", json={"username": "bob", "password": "bob-password"})
        user = {"Authorization": f"Bearer {login.json()['access_token']}"}
        yield Pool(hub, RemoteHub(http, hub.url.replace("http://", "ws://", 1)), admin, user, beating)
    finally:
        beats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beats
        for node in beating:
            with contextlib.suppress(Exception):
                await node.ws.close()
        await http.aclose()
        hub.stop()


async def test_inflated_usage_is_charged_scored_and_rewarded_only_for_verified_work(pool: Pool) -> None:
    honest = await pool.join(pool.node("honest", owner=OWNER))
    liar = await pool.join(pool.node("liar", owner=OTHER_OWNER))
    results: dict[str, tuple[float, dict[str, Any]]] = {}
    for node, claim in ((honest, None), (liar, 1e6)):
        for other in (honest, liar):  # the other one busy, so that this one gets the task
            await pool.remote.http.post(
                "/v1/miners/update", json={"session_token": other.token, "queue_len": int(other is not node)}
            )
        started = time.monotonic()
        task_id = await pool.submit()
        await node.command("assign")
        await asyncio.sleep(1.0)
        ran = time.monotonic() - started  # at least what the hub saw, assignment to result
        answer = await node.result(task_id, gpu_seconds=claim if claim is not None else 1.0)
        assert answer.status_code == 200, answer.text
        ran = time.monotonic() - started
        results[node.miner_id] = (ran, answer.json())
    ran, liar_task = results["liar"]
    assert liar_task["status"] == "succeeded"
    assert liar_task["cost"] <= charge_for_usage(PRICE, ran * (1 + TOLERANCE))  # not the 180,000 held
    assert liar_task["cost"] <= CAP * 60 // 1000
    scores, by_epoch = {}, {}  # per node; per epoch, per owner
    for miner_id, owner in (("honest", OWNER), ("liar", OTHER_OWNER)):
        url = f"/v1/contributions/stats?node_id={miner_id}"
        stats = (await pool.remote.http.get(url, headers=pool.user)).json()
        scores[miner_id] = stats["total_compute_score"]
        for e in stats["epochs"]:
            by_epoch.setdefault(e["epoch"], {})[owner] = e["compute_score"]
    assert 0 < scores["liar"] <= gpu_score(results["liar"][0] * (1 + TOLERANCE), H100)
    assert scores["honest"] == gpu_score(1.0, H100)  # its claim was within what the hub saw
    while time.time() < (max(by_epoch) + 1) * EPOCH_SEC:  # the epochs the work fell into are over
        await asyncio.sleep(0.2)
    for epoch in sorted(by_epoch):  # each pays its emission in proportion to verified work
        body = {"epoch": epoch}
        paid = (await pool.remote.http.post("/v1/rewards/distribute", json=body, headers=pool.admin)).json()
        shares = {p["owner"]: p["amount"] for p in paid["payouts"]}
        assert shares == rewards.split_proportionally(EMISSION, by_epoch[epoch])
    assert await pool.books_balance()


async def test_a_unilateral_stopped_is_requeued_unpaid(pool: Pool) -> None:
    node = await pool.join(pool.node("quitter"))
    task_id = await pool.submit(max_attempts=2)
    await node.command("assign")
    answer = await node.result(task_id, status="stopped", exit_code=-15, gpu_seconds=0.5)
    assert answer.json()["status"] == "queued" and answer.json()["cost"] is None
    await node.beat()
    assert (await node.command("assign"))["task"]["task_id"] == task_id  # the second attempt
    await asyncio.sleep(1.1)  # a new report, not the first one again (that is refused as a replay)
    last = await node.result(task_id, status="stopped", exit_code=-15, gpu_seconds=0.5)
    assert (last.json()["status"], last.json()["outcome"], last.json()["cost"]) == (
        "failed",
        "node_failed",
        0,
    )
    assert await pool.balance() == {"account": "user:bob", "available": 50_000_000, "held": 0}
    assert await pool.books_balance()


async def test_a_silent_node_loses_its_task_and_the_hold_comes_back(pool: Pool) -> None:
    silent = pool.node("silent")
    silent.lists_tasks = False  # heartbeats, but never starts what it is given
    await pool.join(silent)
    task_id = await pool.submit(max_attempts=1)
    await silent.command("assign")

    async def ended() -> bool:
        return (await pool.task(task_id))["status"] == "failed"

    await wait_for(ended, 10, "the silent node's task ended")  # dispatch timeout 2 s + a tick
    final = await pool.task(task_id)
    assert (final["outcome"], final["cost"]) == ("node_failed", 0)
    assert await pool.balance() == {"account": "user:bob", "available": 50_000_000, "held": 0}


async def test_a_users_stop_on_a_deaf_node_ends_within_the_stop_grace(pool: Pool) -> None:
    deaf = await pool.join(pool.node("deaf"))  # lists the task as running, ignores every stop
    task_id = await pool.submit()
    await deaf.command("assign")

    async def running() -> bool:
        return (await pool.task(task_id))["status"] == "running"

    await wait_for(running, 5, "the task running")
    await pool.remote.http.post(f"/v1/tasks/{task_id}/stop", headers=pool.user)

    async def stopped() -> bool:
        return (await pool.task(task_id))["status"] == "stopped"

    took = await wait_for(stopped, 10, "the stop ended the task")
    assert took < 2 + 2  # the stop grace, plus the hub's tick and this loop's polling
    assert (await pool.task(task_id))["cost"] == 0
    assert await pool.balance() == {"account": "user:bob", "available": 50_000_000, "held": 0}
    assert await pool.books_balance()


@pytest.mark.parametrize("hub_env", [{**HUB_ENV, "HEARTBEAT_GRACE_SEC": "60"}])  # back well within it
async def test_a_node_sigkilled_and_restarted_within_the_grace_has_its_task_requeued_at_once(
    pool: Pool, tmp_path: Path, hub_env: dict[str, str]
) -> None:
    node = NodeProcess(pool.hub.url, tmp_path, OWNER, GPUPOOL_NODE_MINER_ID="phoenix")
    node.start()
    try:
        node.wait_healthy()
        long = "import time\nprint('start', flush=True)\ntime.sleep(600)\n"
        body = {
            "command": [sys.executable, "-c", long],
            "max_price_micro_per_ksec": CAP,
            "timeout_sec": 120,
            "max_attempts": 2,
        }
        task_id = (await pool.remote.http.post("/v1/tasks", json=body, headers=pool.user)).json()["task_id"]

        async def running() -> bool:
            return (await pool.task(task_id))["status"] == "running"

        await wait_for(running, 20, "the task running")
        node.kill()
        node.start()  # back long before the 60 s grace period is over

        async def rerun() -> bool:
            return (await pool.task(task_id))["attempts"] == 2

        await wait_for(rerun, 15, "the task requeued and assigned again")  # seconds, not the grace
        await pool.remote.http.post(f"/v1/tasks/{task_id}/stop", headers=pool.user)

        async def stopped() -> bool:
            return (await pool.task(task_id))["status"] == "stopped"

        await wait_for(stopped, 15, "stopped")
        assert (await pool.balance())["held"] == 0
    finally:
        if node.proc is not None and node.proc.poll() is None:
            node.stop()
