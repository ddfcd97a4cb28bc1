"""The node agent as a real process against a real hub process: start-up, health, restarts, crashes."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from gpupool.rpc.protos import nodepool_pb2 as pb
from gpupool.rpc.protos import nodepool_pb2_grpc as pb_grpc
from tests.conftest import ADMIN_PASSWORD
from tests.factories import OWNER
from tests.procs import HubProcess, NodeProcess

pytestmark = pytest.mark.slow
HUB_ENV = {"HEARTBEAT_GRACE_SEC": "3", "GPUPOOL_HUB_HEARTBEAT_INTERVAL_SEC": "0.5"}


def admin_token(hub: HubProcess) -> dict[str, str]:
    resp = httpx.post(f"{hub.url}/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout_s}s")


def miner_status(hub: HubProcess, headers: dict[str, str]) -> dict[str, str]:
    items = httpx.get(f"{hub.url}/v1/miners", headers=headers, timeout=5).json()["items"]
    return {m["miner_id"]: m["status"] for m in items}


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcess]:
    proc = HubProcess(f"sqlite:///{tmp_path}/hub.db", tmp_path, **HUB_ENV)
    proc.start()
    yield proc
    proc.stop()


def test_agent_registers_serves_health_and_survives_a_hub_restart(hub: HubProcess, tmp_path: Path) -> None:
    node = NodeProcess(hub.url, tmp_path, OWNER, GPUPOOL_NODE_MINER_ID="e2e-node")
    node.start()
    try:
        health = node.wait_healthy()
        assert health["status"] == "Available" and health["topic"] == "dstack-gpu-monitor"
        metadata = json.loads(str(health["metadata"]))
        assert metadata["gpu_count"] == 1 and metadata["allow_attach_all"] is True
        key = (tmp_path / "node-data" / "key").read_text().strip()
        assert len(key) == 64 and (tmp_path / "node-data" / "key").stat().st_mode & 0o777 == 0o600
        assert httpx.get(node.url).text == "DStack Backend Health Monitor"
        assert "Worker registration completed successfully" in node.log_path.read_text()

        headers = admin_token(hub)
        wait_for(lambda: miner_status(hub, headers).get("e2e-node") == "online", 10, "node online")
        miner = httpx.get(f"{hub.url}/v1/miners/e2e-node", headers=headers).json()
        assert miner["pubkey"] == health["pubkeys"][0]  # type: ignore[index]
        assert miner["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
        wait_for(
            lambda: bool(httpx.get(f"{hub.url}/v1/miners/e2e-node", headers=headers).json()["telemetry"]),
            10,
            "telemetry",
        )

        hub.kill()  # a crash: nothing flushed, sockets dropped
        time.sleep(4)  # longer than the grace period
        hub.start()
        headers = admin_token(hub)
        took = wait_for(lambda: miner_status(hub, headers).get("e2e-node") == "online", 10, "back online")
        assert took < 10
        # The same key and id as before: a restart of the hub is not a new node.
        assert httpx.get(f"{hub.url}/v1/miners/e2e-node", headers=headers).json()["pubkey"] == miner["pubkey"]
    finally:
        assert node.stop(signal.SIGTERM) == 0
    # A clean stop logs the node out: offline at once, not after the grace period.
    assert miner_status(hub, admin_token(hub))["e2e-node"] == "offline"


def test_killed_agent_is_marked_offline_after_the_grace_period(hub: HubProcess, tmp_path: Path) -> None:
    node = NodeProcess(hub.url, tmp_path, OWNER, GPUPOOL_NODE_MINER_ID="doomed")
    node.start()
    node.wait_healthy()
    headers = admin_token(hub)
    wait_for(lambda: miner_status(hub, headers).get("doomed") == "online", 10, "online")
    node.kill()
    took = wait_for(lambda: miner_status(hub, headers).get("doomed") == "offline", 15, "offline")
    assert took >= 1.0  # not at once: only once the grace period ran out


def test_key_is_reused_across_restarts(hub: HubProcess, tmp_path: Path) -> None:
    first = NodeProcess(hub.url, tmp_path, OWNER)
    first.start()
    pubkey = first.wait_healthy()["pubkeys"]
    assert first.stop(signal.SIGINT) == 0
    second = NodeProcess(hub.url, tmp_path, OWNER)
    second.start()
    assert second.wait_healthy()["pubkeys"] == pubkey
    assert second.stop() == 0


@pytest.mark.parametrize(
    ("registry", "owner", "message"),
    [
        (None, OWNER, "Error: REGISTRY_URL environment variable is required for worker registration"),
        (
            "http://127.0.0.1:9",
            None,
            "Error: OWNER_ADDRESS environment variable is required for worker registration",
        ),
        (
            "http://127.0.0.1:9",
            "0x5AaEb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "Error: OWNER_ADDRESS is invalid",
        ),
    ],
)
def test_missing_or_bad_configuration_exits_2(
    tmp_path: Path, registry: str | None, owner: str | None, message: str
) -> None:
    code, output = NodeProcess(registry, tmp_path, owner).run_to_exit()
    assert code == 2 and message in output
    assert not (tmp_path / "node-data" / "key").exists() or registry is not None


def test_unreachable_registry_exits_1_with_the_seed_log_lines(tmp_path: Path) -> None:
    code, output = NodeProcess("http://127.0.0.1:9", tmp_path, OWNER).run_to_exit()
    assert code == 1
    assert "ERROR Worker registration failed:" in output
    assert "ERROR Cannot start service without successful registration" in output


def test_refused_registration_exits_1(tmp_path: Path) -> None:
    hub = HubProcess(f"sqlite:///{tmp_path}/hub.db", tmp_path, GPUPOOL_REGISTRY_MODE="allowlist")
    hub.start()
    try:
        code, output = NodeProcess(hub.url, tmp_path, OWNER).run_to_exit()
    finally:
        hub.stop()
    assert code == 1
    assert "ERROR Worker registration failed:" in output and "not_authorized" in output
    assert "Cannot start service without successful registration" in output


def test_gpupool_up_runs_hub_and_node_and_stops_both_on_ctrl_c(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import free_port
    from tests.procs import FIXTURES_GPU

    hub_port, node_port, grpc_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "GPUPOOL_NODE_FAKE_NVML": str(FIXTURES_GPU / "h100-idle"),
        "GPUPOOL_HUB_ARGON2_TIME_COST": "1",
        "GPUPOOL_HUB_ARGON2_MEMORY_KIB": "64",
    }
    env.pop("GPUPOOL_ADMIN_PASSWORD", None)
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpupool",
            "up",
            *("--port", str(hub_port), "--node-port", str(node_port)),
            *("--grpc-port", str(grpc_port)),
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    hub_url = f"http://127.0.0.1:{hub_port}"
    try:
        wait_for(lambda: _answers(f"{hub_url}/v1/health"), 30, "hub up")
        wait_for(
            lambda: httpx.get(f"{hub_url}/v1/health").json()["online_miners"] == 1, 30, "local node online"
        )
        # The node registers first and serves /health right after: wait for it rather than race it.
        wait_for(lambda: _answers(f"http://127.0.0.1:{node_port}/health"), 10, "node health")
        assert httpx.get(f"http://127.0.0.1:{node_port}/health").json()["status"] == "Available"
        wait_for(  # the node's own metrics: its socket to the hub is open, no task, no PoC round
            lambda: (
                "gpupool_node_hub_connected 1.0" in httpx.get(f"http://127.0.0.1:{node_port}/metrics").text
            ),
            10,
            "node metrics",
        )
        metrics = httpx.get(f"http://127.0.0.1:{node_port}/metrics").text
        assert "gpupool_node_tasks_running 0.0" in metrics
        assert 'gpupool_node_poc_state{state="IDLE"} 1.0' in metrics
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:  # SPEC §6, on the same hub
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.UserServiceStub(channel).Login(
                    pb.LoginRequest(username="admin", password="x"), timeout=10
                )
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    output = (tmp_path / "up.log").read_text()
    assert code == 0, output
    assert f"hub on {hub_url}" in output and "gpupool task submit" in output
    assert f"gRPC (HiveMind nodepool) on 127.0.0.1:{grpc_port}" in output
    assert "created user 'admin' with password:" in output
    assert "session_token=gps_" not in output  # the heartbeat socket's URL is logged with its token masked
    assert not _answers(f"http://127.0.0.1:{node_port}/health")  # the node went down with it
    assert (tmp_path / "data" / "gpupool.db").exists()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False
