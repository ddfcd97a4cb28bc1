"""``gpupool nodes`` and ``gpupool match`` against a real hub process with signed nodes registered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from gpupool import crypto
from gpupool.cli.app import app
from gpupool.core.ports import SystemClock
from tests.conftest import ADMIN_PASSWORD
from tests.factories import OWNER, gpu, registration
from tests.procs import HubProcess

SECRET = "cli-coordinator-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    workdir = tmp_path_factory.mktemp("cli-nodes-hub")
    proc = HubProcess(f"sqlite:///{workdir}/hub.db", workdir, COORDINATOR_SHARED_SECRET=SECRET)
    proc.start()
    clock = SystemClock()
    nodes = {
        "big-h100": {"gpus": [gpu(0), gpu(1)], "price_micro_per_ksec": 2_500_000, "region": "eu-west"},
        "small-4090": {"gpus": [gpu(0, 24.0, "NVIDIA GeForce RTX 4090")], "price_micro_per_ksec": 300_000},
    }
    for miner_id, fields in nodes.items():
        body = registration(crypto.KeyPair.generate(), clock, miner_id=miner_id, **fields)
        assert httpx.post(f"{proc.url}/v1/miners/register", json=body).status_code == 200
    yield proc
    proc.stop()


def run(tmp_path: Path, *args: str, stdin: str | None = None) -> Result:
    env = {
        "GPUPOOL_CONFIG_DIR": str(tmp_path / "config"),
        "GPUPOOL_HUB_URL": None,
        "COORDINATOR_SHARED_SECRET": None,
        "COLUMNS": "200",  # a wide terminal, so table cells are not wrapped
    }
    return CliRunner().invoke(app, list(args), input=stdin, env=env)


def test_nodes_table_shows_gpus_price_trust_and_last_seen(hub: HubProcess, tmp_path: Path) -> None:
    login = run(
        tmp_path, "login", "--hub", hub.url, "-u", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n"
    )
    assert login.exit_code == 0, login.output
    result = run(tmp_path, "nodes")
    assert result.exit_code == 0, result.output
    assert "big-h100" in result.output and "2 x H100 80GB HBM3 80GB" in result.output
    assert "2.500000" in result.output and "0.50" in result.output and "online" in result.output
    assert "s ago" in result.output
    offline = run(tmp_path, "nodes", "--status", "offline")
    assert offline.exit_code == 0 and "No nodes" in offline.output


def test_nodes_needs_an_admin(hub: HubProcess, tmp_path: Path) -> None:
    assert run(tmp_path, "nodes", "--hub", hub.url).exit_code == 1  # not logged in


def test_match_with_the_shared_secret(hub: HubProcess, tmp_path: Path) -> None:
    result = run(tmp_path, "match", "--hub", hub.url, "--secret", SECRET, "--vram", "40", "--top-k", "2")
    assert result.exit_code == 0, result.output
    assert "big-h100" in result.output and "small-4090" not in result.output.split("Filtered")[0]
    assert "vram 1" in result.output and "best big-h100" in result.output

    cheap = run(tmp_path, "match", "--hub", hub.url, "--secret", SECRET, "--max-price", "1")
    assert "small-4090" in cheap.output and "price 1" in cheap.output

    wrong = run(tmp_path, "match", "--hub", hub.url, "--secret", "nope")
    assert wrong.exit_code == 1 and "bad_coordinator_secret" in wrong.output
    bad_price = run(tmp_path, "match", "--hub", hub.url, "--secret", SECRET, "--max-price", "-3")
    assert bad_price.exit_code == 2


def test_balance_of_a_node_owner(hub: HubProcess, tmp_path: Path) -> None:
    login = run(
        tmp_path, "login", "--hub", hub.url, "-u", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n"
    )
    assert login.exit_code == 0
    result = run(tmp_path, "balance", "--address", OWNER.lower())
    assert result.exit_code == 0, result.output
    assert f"Balanceof{OWNER}" in "".join(result.output.split()) and "pending rewards" in result.output
    bad = run(tmp_path, "balance", "--address", "0x5AaEb6053F3E94C9b9A09f33669435E7Ef1BeAed")
    assert bad.exit_code == 2 and "checksum" in bad.output
