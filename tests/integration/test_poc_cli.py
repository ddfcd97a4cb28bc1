"""``gpupool poc round|open-round|close-round|results`` and the SDK's batch submission, on a real hub."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from gpupool import crypto
from gpupool.cli.app import app
from gpupool.client import Client, ClientError
from gpupool.core.poc import PARAMS_TINY, compute_distances
from gpupool.core.ports import SystemClock
from tests.conftest import ADMIN_PASSWORD
from tests.factories import registration
from tests.procs import HubProcess, running_hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    with running_hub(tmp_path_factory.mktemp("poc-cli-hub")) as proc:
        yield proc


def cli(config_dir: Path, *args: str) -> Result:
    env = {"GPUPOOL_CONFIG_DIR": str(config_dir), "GPUPOOL_HUB_URL": None}
    return CliRunner().invoke(app, list(args), env=env)


def test_a_round_from_opening_to_results_through_the_cli_and_sdk(hub: HubProcess, tmp_path: Path) -> None:
    config = tmp_path / "config"
    # Public commands need no login: between rounds the hub says so and the CLI exits 1.
    none = cli(config, "poc", "round", "--hub", hub.url)
    assert none.exit_code == 1 and "no PoC round is open" in none.stderr
    assert cli(config, "poc", "open-round", "--hub", hub.url).exit_code == 1  # admin only: not logged in
    login = CliRunner().invoke(
        app,
        ["login", "--hub", hub.url, "--username", "admin", "--password-stdin"],
        input=ADMIN_PASSWORD + "\n",
        env={"GPUPOOL_CONFIG_DIR": str(config)},
    )
    assert login.exit_code == 0, login.output
    bad = cli(config, "poc", "open-round", "--hub", hub.url, "--params", "v7")
    assert bad.exit_code == 2 and "--params must be one of" in bad.stderr
    opened = cli(config, "poc", "open-round", "--hub", hub.url, "--params", "tiny", "--duration", "600")
    assert opened.exit_code == 0, opened.output
    shown = cli(config, "poc", "round", "--hub", hub.url)
    assert shown.exit_code == 0 and "tiny" in shown.stdout

    with Client(hub.url) as sdk:
        rnd = sdk.poc_round()
        assert rnd["params"] == PARAMS_TINY.to_dict() and rnd["status"] == "open"
        key = crypto.KeyPair.generate()
        httpx.post(f"{hub.url}/v1/miners/register", json=registration(key, SystemClock())).raise_for_status()
        candidates = list(range(50))
        dist = compute_distances(rnd["block_hash"], key.pubkey, candidates, PARAMS_TINY)
        keep = [(n, float(d)) for n, d in zip(candidates, dist, strict=True) if d < rnd["r_target"]]
        body = {
            "public_key": key.pubkey,
            "block_hash": rnd["block_hash"],
            "block_height": rnd["block_height"],
            "node_id": 0,
            "nonces": [n for n, _ in keep],
            "dist": [d for _, d in keep],
        }
        signed = crypto.sign_body(key, crypto.KIND_POC_BATCH, body, created_at=int(time.time()))
        out = sdk.submit_poc_batch(signed)
        assert out["unique_nonces_total"] == len(keep)
        with pytest.raises(ClientError) as replay:
            sdk.submit_poc_batch(signed)
        assert replay.value.status == 401 and replay.value.code == "replayed_event"

    height = str(rnd["block_height"])
    early = cli(config, "poc", "results", height, "--hub", hub.url)
    assert early.exit_code == 0 and "not validated yet" in early.stdout
    closed = cli(config, "poc", "close-round", height, "--hub", hub.url)
    assert closed.exit_code == 0, closed.output
    assert "valid" in closed.stdout and str(len(keep)) in closed.stdout
    results = cli(config, "poc", "results", height, "--hub", hub.url)
    assert results.exit_code == 0 and results.stdout == closed.stdout
    missing = cli(config, "poc", "results", "999", "--hub", hub.url)
    assert missing.exit_code == 1 and "no PoC round 999" in missing.stderr
