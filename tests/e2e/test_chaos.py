"""Crashes with real processes: the hub or a node SIGKILLed in the middle of a task."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD
from tests.factories import OWNER
from tests.procs import HubProcess, NodeProcess

pytestmark = pytest.mark.slow
HUB_ENV = {"GPUPOOL_HUB_HEARTBEAT_INTERVAL_SEC": "0.5", "HEARTBEAT_GRACE_SEC": "3"}
# Prints a numbered line every 0.2 s for ~4 s, then finishes.
COUNTER = "import time\nfor i in range(20):\n    print(f'line {i}', flush=True)\n    time.sleep(0.2)\n"


def login(hub: HubProcess, username: str, password: str) -> dict[str, str]:
    token = httpx.post(f"{hub.url}/v1/auth/login", json={"username": username, "password": password}).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


def fund_user(hub: HubProcess) -> dict[str, str]:
    admin = login(hub, "admin", ADMIN_PASSWORD)
    httpx.post(
        f"{hub.url}/v1/users",
        json={"username": "bob", "password": "bob-password", "role": "user"},
        headers=admin,
    )
    httpx.post(
        f"{hub.url}/v1/admin/mint",
        json={"to": "bob", "amount": 50_000_000, "idempotency_key": "f"},
        headers=admin,
    )
    return login(hub, "bob", "bob-password")


def task(hub: HubProcess, user: dict[str, str], task_id: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{hub.url}/v1/tasks/{task_id}", headers=user, timeout=5).json()
    return body


def wait(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout_s}s")


def output_lines(hub: HubProcess, user: dict[str, str], task_id: str) -> list[str]:
    with httpx.stream("GET", f"{hub.url}/v1/tasks/{task_id}/output", headers=user, timeout=30) as resp:
        text = "".join(resp.iter_text())
    ids = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
    assert ids == list(range(len(ids))), f"gap or duplicate in output ids: {ids}"
    return [line for line in text.splitlines() if line.startswith("data: ")]


def test_hub_killed_mid_task_loses_nothing_and_settles_once(tmp_path: Path) -> None:
    hub = HubProcess(f"sqlite:///{tmp_path}/hub.db", tmp_path, **HUB_ENV)
    hub.start()
    node = NodeProcess(hub.url, tmp_path, OWNER, GPUPOOL_NODE_MINER_ID="survivor")
    node.start()
    try:
        node.wait_healthy()
        user = fund_user(hub)
        body = {
            "command": [sys.executable, "-c", COUNTER],
            "max_price_micro_per_ksec": 2_000_000,
            "timeout_sec": 60,
        }
        task_id = httpx.post(f"{hub.url}/v1/tasks", json=body, headers=user).json()["task_id"]
        wait(lambda: task(hub, user, task_id)["status"] == "running", 20, "task running")
        time.sleep(0.5)
        hub.kill()  # mid-stream: the node keeps running the task and keeps its unsent output
        time.sleep(1.5)
        hub.start()
        user = login(hub, "bob", "bob-password")
        wait(lambda: task(hub, user, task_id)["status"] == "succeeded", 40, "task finished after the restart")
        lines = output_lines(hub, user, task_id)
        assert [f'data: "line {i}\\n"' in "".join(lines) for i in range(20)] == [True] * 20
        final = task(hub, user, task_id)
        balance = httpx.get(f"{hub.url}/v1/balance", headers=user).json()
        assert balance == {"account": "user:bob", "available": 50_000_000 - final["cost"], "held": 0}
        admin = login(hub, "admin", ADMIN_PASSWORD)
        assert httpx.get(f"{hub.url}/v1/admin/ledger/trial-balance", headers=admin).json()["balanced"] is True
    finally:
        node.stop()
        hub.stop()


def test_node_killed_mid_task_is_rerun_elsewhere_and_charged_once(tmp_path: Path) -> None:
    hub = HubProcess(f"sqlite:///{tmp_path}/hub.db", tmp_path, **HUB_ENV)
    hub.start()
    first = NodeProcess(hub.url, tmp_path / "a", OWNER, GPUPOOL_NODE_MINER_ID="doomed")
    (tmp_path / "a").mkdir()
    first.start()
    second = None
    try:
        first.wait_healthy()
        user = fund_user(hub)
        long = "import time\nprint('start', flush=True)\ntime.sleep(600)\n"
        body = {
            "command": [sys.executable, "-c", long],
            "max_price_micro_per_ksec": 2_000_000,
            "timeout_sec": 60,
            "max_attempts": 2,
        }
        task_id = httpx.post(f"{hub.url}/v1/tasks", json=body, headers=user).json()["task_id"]
        wait(lambda: task(hub, user, task_id)["status"] == "running", 20, "task running on the first node")
        (tmp_path / "b").mkdir()
        second = NodeProcess(hub.url, tmp_path / "b", OWNER, GPUPOOL_NODE_MINER_ID="healthy")
        second.start()
        second.wait_healthy()
        first.kill()
        wait(lambda: task(hub, user, task_id)["miner_id"] == "healthy", 30, "rerun on the second node")
        httpx.post(f"{hub.url}/v1/tasks/{task_id}/stop", headers=user)
        wait(lambda: task(hub, user, task_id)["status"] == "stopped", 30, "stopped")
        final = task(hub, user, task_id)
        assert final["attempts"] == 2
        balance = httpx.get(f"{hub.url}/v1/balance", headers=user).json()
        assert balance == {"account": "user:bob", "available": 50_000_000 - final["cost"], "held": 0}
        admin = login(hub, "admin", ADMIN_PASSWORD)
        postings = httpx.get(f"{hub.url}/v1/admin/ledger/trial-balance", headers=admin).json()
        assert postings["balanced"] is True
    finally:
        for proc in (first, second):
            if proc is not None and proc.proc is not None and proc.proc.poll() is None:
                proc.stop()
        hub.stop()
