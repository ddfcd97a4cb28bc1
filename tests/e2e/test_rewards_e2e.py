"""Rewards end to end with real processes: three node agents run tasks of different sizes, an admin
closes the epoch, the payouts follow the measured usage, the receipts verify offline with the CLI,
and the balances show in ``gpupool balance --address`` and ``GET /v1/rewards/balance``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpupool import receipts
from gpupool.client import format_amount
from gpupool.core import rewards
from tests.conftest import ADMIN_PASSWORD
from tests.factories import OTHER_OWNER, OWNER
from tests.procs import HubProcess, NodeProcess

pytestmark = pytest.mark.slow

THIRD_OWNER = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"
EPOCH_SEC = 12
EMISSION = 90_000_000
# Busy loops of different lengths; the hub scores each from the usage its node measured and signed.
LOOPS = {"small": 1.0, "mid": 2.0, "big": 3.0}
TASK_CODE = "import time\nstart = time.monotonic()\nwhile time.monotonic() - start < {seconds}:\n    pass\n"


def login(hub: HubProcess, username: str, password: str) -> dict[str, str]:
    resp = httpx.post(f"{hub.url}/v1/auth/login", json={"username": username, "password": password})
    return {"Authorization": f"Bearer {resp.json()['access_token']}"}


def cli(*args: str, config_dir: Path, stdin: str | None = None) -> subprocess.Popen[str]:
    """``gpupool …`` as a user runs it, with its own config directory (the saved session)."""
    return subprocess.Popen(
        [sys.executable, "-m", "gpupool", *args],
        env={**os.environ, "GPUPOOL_CONFIG_DIR": str(config_dir), "COLUMNS": "120"},
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], stdin: str | None = None) -> tuple[int, str]:
    out, _ = proc.communicate(stdin, timeout=60)
    return proc.returncode, out


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[tuple[HubProcess, dict[str, NodeProcess]]]:
    hub = HubProcess(
        f"sqlite:///{tmp_path}/hub.db",
        tmp_path,
        GPUPOOL_HUB_HEARTBEAT_INTERVAL_SEC="0.5",
        GPUPOOL_HUB_REWARD_EPOCH_SEC=str(EPOCH_SEC),
        GPUPOOL_HUB_BASE_REWARD_MICRO=str(EMISSION),
        GPUPOOL_HUB_MIN_SETTLEMENT_MICRO="1",
        # Epochs are closed by the admin endpoint in this test, not by the hub's own schedule.
        GPUPOOL_HUB_REWARD_AUTO_DISTRIBUTE="false",
    )
    hub.start()
    nodes: dict[str, NodeProcess] = {}
    try:
        for name, owner in zip(LOOPS, (OWNER, OTHER_OWNER, THIRD_OWNER), strict=True):
            workdir = tmp_path / name
            workdir.mkdir()
            nodes[f"node-{name}"] = NodeProcess(
                hub.url,
                workdir,
                owner,
                GPUPOOL_NODE_MINER_ID=f"node-{name}",
                GPUPOOL_NODE_MAX_PARALLEL="1",
            )
        for node in nodes.values():
            node.start()
        for node in nodes.values():
            node.wait_healthy()
        deadline = time.monotonic() + 20
        while httpx.get(f"{hub.url}/v1/health").json()["online_miners"] < 3:
            assert time.monotonic() < deadline, "the three nodes did not come online"
            time.sleep(0.1)
        yield hub, nodes
    finally:
        for node in nodes.values():
            if node.proc is not None:
                node.stop()
        hub.stop()


def run_tasks(hub: HubProcess, user: dict[str, str]) -> list[dict[str, Any]]:
    """One busy loop per node, all submitted at once (each node takes one: max_parallel 1)."""
    ids = []
    for seconds in sorted(LOOPS.values(), reverse=True):
        body = {
            "command": [sys.executable, "-c", TASK_CODE.format(seconds=seconds)],
            "max_price_micro_per_ksec": 5_000_000,
            "timeout_sec": 60,
        }
        resp = httpx.post(f"{hub.url}/v1/tasks", json=body, headers=user)
        assert resp.status_code == 201, resp.text
        ids.append(resp.json()["task_id"])
    deadline = time.monotonic() + 40
    done: dict[str, dict[str, Any]] = {}
    while len(done) < len(ids):
        assert time.monotonic() < deadline, f"tasks did not finish: {done}"
        for task_id in ids:
            task = httpx.get(f"{hub.url}/v1/tasks/{task_id}", headers=user).json()
            if task["status"] in ("succeeded", "failed", "stopped", "expired"):
                done[task_id] = task
        time.sleep(0.2)
    return [done[i] for i in ids]


def test_three_nodes_are_paid_by_measured_usage_with_receipts_that_verify(
    pool: tuple[HubProcess, dict[str, NodeProcess]], tmp_path: Path
) -> None:
    hub, nodes = pool
    admin = login(hub, "admin", ADMIN_PASSWORD)
    httpx.post(
        f"{hub.url}/v1/users",
        json={"username": "alice", "password": "alice-password", "role": "user"},
        headers=admin,
    ).raise_for_status()
    httpx.post(
        f"{hub.url}/v1/admin/mint",
        json={"to": "alice", "amount": 50_000_000, "idempotency_key": "fund-alice"},
        headers=admin,
    ).raise_for_status()
    user = login(hub, "alice", "alice-password")

    # Start the work early enough in an epoch that it most likely all lands in one (any split is
    # still checked exactly below, epoch by epoch).
    if EPOCH_SEC - time.time() % EPOCH_SEC < 6:
        time.sleep(EPOCH_SEC - time.time() % EPOCH_SEC + 0.05)
    tasks = run_tasks(hub, user)
    assert all(t["status"] == "succeeded" for t in tasks), tasks
    by_node = {t["miner_id"]: t for t in tasks}
    assert set(by_node) == set(nodes), "each node ran one task"

    # Each contribution is the hub's score of what the node measured, never more.
    owner_of: dict[str, str] = {}
    scores: dict[int, dict[str, int]] = {}
    for miner_id, task in by_node.items():
        miner = httpx.get(f"{hub.url}/v1/miners/{miner_id}", headers=admin).json()
        owner_of[miner_id] = miner["owner"]
        usage = task["usage"]
        expected = rewards.usage_score(usage["gpu_seconds"], miner["gpus"][0]["name"], usage["cpu_seconds"])
        stats = httpx.get(f"{hub.url}/v1/contributions/stats?node_id={miner_id}", headers=user).json()
        assert stats["contribution_count"] == 1 and stats["total_compute_score"] == expected > 0
        [epoch_stats] = stats["epochs"]
        scores.setdefault(epoch_stats["epoch"], {})[miner["owner"]] = expected
    # Longer loops measured longer: the scores follow the task sizes.
    ordered = sorted(by_node, key=lambda m: LOOPS[m.removeprefix("node-")])
    measured = [by_node[m]["usage"]["gpu_seconds"] for m in ordered]
    assert measured == sorted(measured) and measured[0] > 0

    # Close every epoch the work fell into, by hand, once it is over.
    while time.time() < (max(scores) + 1) * EPOCH_SEC:
        time.sleep(0.1)
    hub_key = httpx.get(f"{hub.url}/v1/health").json()["hub_pubkey"]
    paid: dict[str, dict[str, Any]] = {}
    for epoch in sorted(scores):
        out = httpx.post(f"{hub.url}/v1/rewards/distribute", json={"epoch": epoch}, headers=admin).json()
        assert out["already_distributed"] is False and out["emission"] == EMISSION
        expected_split = rewards.split_proportionally(EMISSION, scores[epoch])
        assert {p["owner"]: p["amount"] for p in out["payouts"]} == expected_split
        assert sum(expected_split.values()) == EMISSION  # nothing created or lost
        for payout in out["payouts"]:
            assert payout["success"] is True
            assert payout["transaction_signature"] == payout["receipt"]["root_event"]["sig"]
            paid[payout["owner"]] = payout
        again = httpx.post(f"{hub.url}/v1/rewards/distribute", json={"epoch": epoch}, headers=admin).json()
        assert again["already_distributed"] is True and again["payouts"] == []
    if len(scores) == 1:  # the usual case: the shares follow the measured usage
        amounts = [paid[owner_of[m]]["amount"] for m in ordered]
        assert amounts == sorted(amounts)
        total_gpu_s = sum(measured)
        for m, gpu_s in zip(ordered, measured, strict=True):
            share = paid[owner_of[m]]["amount"] / EMISSION
            assert abs(share - gpu_s / total_gpu_s) < 0.01

    # Receipts verify offline with the CLI (the key read from the hub's /v1/health); forgeries fail.
    files = []
    for i, payout in enumerate(paid.values()):
        path = tmp_path / f"receipt-{i}.json"
        path.write_text(json.dumps(payout))
        files.append(path)
    forged = json.loads(files[0].read_text())["receipt"]
    forged["payout"]["amount_micro"] += 1_000_000
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    stolen = json.loads(files[1].read_text())["receipt"]
    stolen["payout"]["owner"] = OWNER if stolen["payout"]["owner"] != OWNER else OTHER_OWNER
    (tmp_path / "stolen.json").write_text(json.dumps(stolen))
    config = tmp_path / "cli"
    login_proc = cli(
        "login", "--hub", hub.url, "-u", "alice", "--password-stdin", config_dir=config, stdin=""
    )
    verifying = [cli("verify-receipt", str(f), "--hub", hub.url, config_dir=config) for f in files]
    refusing = [
        cli("verify-receipt", str(tmp_path / name), "--hub", hub.url, config_dir=config)
        for name in ("forged.json", "stolen.json")
    ]
    assert finish(login_proc, "alice-password\n")[0] == 0
    balances = {owner: cli("balance", "--address", owner, config_dir=config) for owner in paid}
    for proc in verifying:
        code, text = finish(proc)
        assert code == 0 and "receipt verified" in text and hub_key in text, text
    for proc in refusing:
        code, text = finish(proc)
        assert code == 1 and "does NOT verify" in text, text

    # Balances: the task payment plus the reward, in the API and in `gpupool balance --address`.
    for miner_id, task in by_node.items():
        owner = owner_of[miner_id]
        reward = paid[owner]["amount"]
        api = httpx.get(f"{hub.url}/v1/rewards/balance?address={owner.lower()}", headers=user).json()
        assert api["wallet_address"] == owner and api["pending_rewards"] == 0
        assert api["total_rewards_distributed"] == reward
        assert api["balance"] == task["cost"] + reward
        [history] = api["payouts"]
        assert receipts.verify_payout_receipt(history["receipt"], hub_key)["amount_micro"] == reward
        code, text = finish(balances[owner])
        assert code == 0 and f"Balanceof{owner}" in "".join(text.split()), text
        rows = {line.split()[1]: line.split() for line in text.splitlines() if len(line.split()) > 2}
        assert format_amount(reward) in rows["rewards"], text
        assert format_amount(task["cost"] + reward) in rows["available"], text
    trial = httpx.get(f"{hub.url}/v1/admin/ledger/trial-balance", headers=admin).json()
    assert trial["balanced"] is True
