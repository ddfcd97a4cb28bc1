"""``gpupool up`` stopped from a terminal mid-task: the node stops and reports its task, then the hub."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, free_port
from tests.procs import FIXTURES_GPU

pytestmark = pytest.mark.slow
LONG_TASK = "import time\nprint('working', flush=True)\ntime.sleep(600)"


def _wait(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout_s}s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stopping_up_mid_task_leaves_no_task_running(tmp_path: Path, sig: signal.Signals) -> None:
    hub_port, node_port, grpc_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "GPUPOOL_NODE_FAKE_NVML": str(FIXTURES_GPU / "h100-idle"),
        "GPUPOOL_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "GPUPOOL_HUB_ARGON2_TIME_COST": "1",
        "GPUPOOL_HUB_ARGON2_MEMORY_KIB": "64",
        "GPUPOOL_HUB_HEARTBEAT_INTERVAL_SEC": "0.5",
    }
    argv = ["up", "--port", str(hub_port), "--node-port", str(node_port), "--grpc-port", str(grpc_port)]
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        # Its own session and process group, as a shell gives a foreground job: the terminal's Ctrl-C
        # reaches the hub and the node together.
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpupool", *argv],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    hub = f"http://127.0.0.1:{hub_port}"
    try:
        _wait(
            lambda: httpx.get(f"{hub}/v1/health", timeout=1).json()["online_miners"] == 1, 60, "node online"
        )
        token = httpx.post(
            f"{hub}/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
        ).json()["access_token"]
        admin = {"Authorization": f"Bearer {token}"}
        minted = httpx.post(
            f"{hub}/v1/admin/mint",
            json={"to": "admin", "amount": 10_000_000, "idempotency_key": "m"},
            headers=admin,
        )
        assert minted.status_code < 300, minted.text
        body = {
            "command": [sys.executable, "-c", LONG_TASK],
            "max_price_micro_per_ksec": 2_000_000,
            "timeout_sec": 600,
        }
        resp = httpx.post(f"{hub}/v1/tasks", json=body, headers=admin)
        assert resp.status_code == 201, resp.text
        task_id = resp.json()["task_id"]
        _wait(
            lambda: httpx.get(f"{hub}/v1/tasks/{task_id}", headers=admin).json()["status"] == "running",
            30,
            "task running",
        )
        os.killpg(proc.pid, sig)
        code = proc.wait(90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log_path.read_text()
    assert code == 0, output
    # In order: the node reported its task and logged out while the hub still answered.
    reported = output.find(f"task {task_id} stopped")
    assert 0 <= reported < output.index("Shutting down"), output
    assert "POST /v1/miners/logout" in output, output
    with sqlite3.connect(tmp_path / "data" / "gpupool.db") as db:
        [(status,)] = db.execute("SELECT state FROM tasks WHERE task_id = ?", (task_id,)).fetchall()
        held = db.execute("SELECT balance_micro FROM accounts WHERE id = 'hold:user:admin'").fetchall()
    assert status in ("stopped", "queued", "failed"), output  # ended or handed back, never left running
    if status != "queued":
        assert held in ([], [(0,)]), output  # an ended task holds nothing
