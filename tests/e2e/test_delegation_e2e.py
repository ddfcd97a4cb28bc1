"""Small node → big node → hub with real processes: the big node generates, only the small node signs.

The big node (``gpupool delegate serve``) runs in its own directory with no key of the small node and
an environment without it; the small node (``gpupool node`` with DELEGATION_URL) signs each batch and
the hub accepts them, validates them at round close and gives the small node a PoC weight.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from gpupool import crypto
from gpupool.cli.app import app as cli_app
from gpupool.core.poc import Batch
from gpupool.pow.service import signed_batch
from tests.conftest import ADMIN_PASSWORD
from tests.factories import OWNER
from tests.procs import DelegateProcess, NodeProcess, running_hub

pytestmark = pytest.mark.slow
TOKEN = "e2e-delegation-token-123"


def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout_s}s")


def test_small_node_delegates_to_a_big_node_and_earns_weight_on_the_hub(tmp_path: Path) -> None:
    big_dir, small_dir = tmp_path / "big", tmp_path / "small"
    big_dir.mkdir()
    small_dir.mkdir()
    with running_hub(tmp_path) as hub:
        login = httpx.post(f"{hub.url}/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
        big = DelegateProcess(big_dir, TOKEN)
        big.start()
        small = NodeProcess(
            hub.url,
            small_dir,
            OWNER,
            GPUPOOL_NODE_MINER_ID="small-node",
            DELEGATION_URL=big.url,
            DELEGATION_AUTH_TOKEN=TOKEN,
            DELEGATION_POLL_SEC="0.5",
        )
        small.start()
        try:
            pubkey = str(small.wait_healthy()["pubkeys"][0])  # type: ignore[index]
            secret = (small_dir / "node-data" / "key").read_text().strip()
            assert crypto.KeyPair.from_hex(secret).pubkey == pubkey
            resp = httpx.post(
                f"{hub.url}/v1/admin/poc/rounds",
                json={"params_name": "tiny", "duration_sec": 600, "batch_size": 32},
                headers=admin,
            )
            assert resp.status_code == 201, resp.text
            rnd = resp.json()
            status = httpx.get(f"{small.url}/api/v1/pow/status").json()
            assert status["delegation_mode"] is True and status["status"] == "IDLE"

            init = {
                "node_id": 0,
                "node_count": 1,
                "block_hash": rnd["block_hash"],
                "block_height": rnd["block_height"],
                "public_key": pubkey,
                "batch_size": rnd["batch_size"],
                "r_target": rnd["r_target"],
                "fraud_threshold": rnd["fraud_threshold"],
                "params": rnd["params"],
            }
            resp = httpx.post(f"{small.url}/api/v1/pow/init/generate", json=init, timeout=10)
            assert resp.status_code == 200, resp.text

            def submitted() -> dict[str, Any] | None:
                s = httpx.get(f"{small.url}/api/v1/pow/status").json()
                return s if s.get("batches_submitted", 0) >= 3 else None

            status = wait_for(submitted, 60, "three batches signed and accepted by the hub")
            assert status["status"] == "GENERATING" and status["is_model_initialized"] is True
            assert status["gpu_count"] == 0 and status["batches_rejected"] == 0  # a CPU big node
            assert status["qualified_per_s"] > 0 and status["nonces_submitted"] > 0
            sessions = httpx.get(f"{big.url}/api/v1/delegation/status").json()
            assert sessions["active_sessions"] == 1
            (entry,) = sessions["sessions"].values()
            assert entry["status"] == "generating" and entry["total_generated"] >= 3

            shown = CliRunner().invoke(cli_app, ["poc", "status", "--node", small.url])
            assert shown.exit_code == 0 and "delegation_mode" in shown.output and "True" in shown.output

            check_batches_verify_only_once_signed_by_the_small_node(big.url, hub.url, init, secret)

            resp = httpx.post(f"{small.url}/api/v1/pow/stop", timeout=30)
            assert resp.json()["pow_status"]["status"] == "STOPPED"
            after = httpx.get(f"{big.url}/api/v1/delegation/status").json()
            assert after["active_sessions"] == 0  # the small node ended its session on /stop

            closed = httpx.post(
                f"{hub.url}/v1/admin/poc/rounds/{rnd['block_height']}/close", headers=admin, timeout=60
            )
            assert closed.status_code == 200, closed.text
            verdicts = httpx.get(f"{hub.url}/v1/poc/rounds/{rnd['block_height']}").json()["results"]
            (mine,) = [v for v in verdicts if v["public_key"] == pubkey]
            assert mine["fraud"] is False and mine["weight"] > 0
            miner = httpx.get(f"{hub.url}/v1/miners/small-node", headers=admin).json()
            assert miner["poc_weight"] == mine["weight"]
        finally:
            assert small.stop() == 0
            assert big.stop() == 0
    # The big node never held the small node's secret: not in its files, its environment or its log.
    assert secret not in str(big.env)
    for path in big_dir.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path
    assert not (big_dir / "node-data").exists() and not (big_dir / "data").exists()


def check_batches_verify_only_once_signed_by_the_small_node(
    big_url: str, hub_url: str, init: dict[str, Any], secret: str
) -> None:
    """A batch straight from the big node is refused by the hub unless the small node's key signs it."""
    start = httpx.post(f"{big_url}/api/v1/delegation/start", json={**init, "auth_token": TOKEN}, timeout=30)
    sid = start.json()["session_id"]
    try:

        def one_batch() -> Batch | None:
            got = httpx.get(f"{big_url}/api/v1/delegation/batches/{sid}", params={"auth_token": TOKEN}).json()
            batches = [Batch.from_dict(b) for b in got["batches"] if b["nonces"]]
            return batches[0] if batches else None

        batch = wait_for(one_batch, 60, "a batch from the big node")
        unsigned = signed_batch(crypto.KeyPair.generate(), batch, int(time.time()))
        bare = {k: v for k, v in unsigned.items() if k != "sig_event"}
        assert httpx.post(f"{hub_url}/v1/poc/batches", json=bare).status_code == 422
        # The big node (or anyone without the small node's key) can sign only with another key.
        resp = httpx.post(f"{hub_url}/v1/poc/batches", json=unsigned)
        assert resp.status_code == 401, resp.text
        owner = crypto.KeyPair.from_hex(secret)
        resp = httpx.post(f"{hub_url}/v1/poc/batches", json=signed_batch(owner, batch, int(time.time())))
        assert resp.status_code == 200, resp.text
    finally:
        httpx.post(f"{big_url}/api/v1/delegation/stop", json={"session_id": sid, "auth_token": TOKEN})


def test_without_delegation_the_node_generates_locally_and_the_hub_accepts(tmp_path: Path) -> None:
    with running_hub(tmp_path) as hub:
        login = httpx.post(f"{hub.url}/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
        node = NodeProcess(
            hub.url,
            tmp_path,
            OWNER,
            GPUPOOL_NODE_MINER_ID="local-node",
            DELEGATION_URL="",  # blank, as the seed's "switch it off" config.env
            DELEGATION_AUTH_TOKEN="",
            DELEGATION_POLL_SEC="0.5",
            GPUPOOL_NODE_POC_DEVICE="cpu",
        )
        node.start()
        try:
            pubkey = str(node.wait_healthy()["pubkeys"][0])  # type: ignore[index]
            rnd = httpx.post(
                f"{hub.url}/v1/admin/poc/rounds",
                json={"params_name": "tiny", "duration_sec": 600, "batch_size": 32},
                headers=admin,
            ).json()
            init = {k: rnd[k] for k in ("block_hash", "block_height", "batch_size", "r_target", "params")}
            resp = httpx.post(f"{node.url}/api/v1/pow/init/generate", json={**init, "public_key": pubkey})
            assert resp.status_code == 200, resp.text

            def submitted() -> dict[str, Any] | None:
                s = httpx.get(f"{node.url}/api/v1/pow/status").json()
                return s if s.get("batches_submitted", 0) >= 2 else None

            status = wait_for(submitted, 60, "local batches accepted by the hub")
            assert status["delegation_mode"] is False and status["status"] == "GENERATING"
            assert status["nonces_per_s"] > 0 and status["nonces_computed"] > status["nonces_submitted"] > 0
            # The hub closes the round while the node still generates: the node stops by itself.
            closed = httpx.post(
                f"{hub.url}/v1/admin/poc/rounds/{rnd['block_height']}/close", headers=admin, timeout=60
            )
            assert closed.status_code == 200, closed.text
            ended = wait_for(
                lambda: (
                    (s := httpx.get(f"{node.url}/api/v1/pow/status").json())["status"] == "ROUND_CLOSED" and s
                ),
                30,
                "the node noticing the closed round",
            )
            assert ended["ended_because"] == "round_closed"
            miner = httpx.get(f"{hub.url}/v1/miners/local-node", headers=admin).json()
            assert miner["poc_weight"] > 0
        finally:
            assert node.stop() == 0


def test_delegate_serve_stops_cleanly_on_sigint_and_sigterm(tmp_path: Path) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        big = DelegateProcess(tmp_path, TOKEN)
        big.start()
        assert big.stop(sig) == 0
