"""The web dashboard at ``/``: served with a strict CSP, and every API call its script makes works."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gpupool.core.ports import FakeClock
from gpupool.node.gpu import heartbeat_gpus, read_inventory, read_telemetry, registration_gpus
from gpupool.node.nvml_replay import ReplayNvml
from tests.conftest import HubClient, LiveHub
from tests.simnode import SimNode

WEB = Path(__file__).resolve().parents[2] / "src" / "gpupool" / "web"
LOADED = Path(__file__).resolve().parents[1] / "fixtures" / "gpu" / "h100-loaded"


async def test_dashboard_page_and_script_are_served_with_a_strict_policy(hub_client: HubClient) -> None:
    page = await hub_client.http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe-eval" not in csp
    assert '<script src="/web/app.js"></script>' in page.text
    assert "<script>" not in page.text  # no inline script: the policy would block it
    script = await hub_client.http.get("/web/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "innerHTML" not in script.text  # API values reach the page through textContent only


async def test_every_api_call_of_the_dashboard_answers_for_a_signed_in_user(hub_client: HubClient) -> None:
    script = (WEB / "app.js").read_text()
    paths = set(re.findall(r'api\("(/[^"]*)"', script))
    assert {"/v1/health", "/metrics", "/v1/me", "/v1/balance", "/v1/pool", "/v1/auth/login"} <= paths
    user = await hub_client.make_user("dash", balance=2_500_000)
    for path in sorted(paths):
        if path == "/v1/auth/login":
            resp = await hub_client.http.post(path, json={"username": "dash", "password": "pw-dash-secret"})
            assert "access_token" in resp.json()
        elif path.endswith("/"):  # a prefix the script completes with an id: the route must exist
            templates = (await hub_client.http.get("/openapi.json")).json()["paths"]
            assert any(t.startswith(path) for t in templates), path
            continue
        else:
            resp = await hub_client.http.get(path, headers=user)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)
    balance = (await hub_client.http.get("/v1/balance", headers=user)).json()
    assert balance["available"] == 2_500_000


async def test_pool_overview_shows_online_gpus_without_owners_or_keys(
    live_hub_factory: Callable[..., Awaitable[LiveHub]], clock: FakeClock
) -> None:
    hub = await live_hub_factory()
    assert (await hub.http.get("/v1/pool")).status_code == 401
    user = await hub.make_user("viewer")
    nvml = ReplayNvml(LOADED)
    node = SimNode(hub, clock, "h100-box", gpus=registration_gpus(read_inventory(nvml)), region="eu-west")
    await node.connect()
    readings = heartbeat_gpus(read_telemetry(nvml))
    await node.ws.send(json.dumps({"ts": clock.now(), "queue_len": 0, "gpus": readings}))
    pool = {}
    for _ in range(100):
        pool = (await hub.http.get("/v1/pool", headers=user)).json()
        if pool["nodes"] and pool["nodes"][0]["gpus"][0]["util_pct"] is not None:
            break
        await asyncio.sleep(0.02)
    assert (pool["nodes_online"], pool["gpus_online"]) == (1, 1)
    entry = pool["nodes"][0]
    assert entry["miner_id"] == "h100-box" and entry["region"] == "eu-west"
    gpu = entry["gpus"][0]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert (gpu["util_pct"], gpu["mem_used_mb"], gpu["power_w"]) == (
        readings[0]["util_pct"],
        readings[0]["mem_used_mb"],
        readings[0]["power_w"],
    )
    assert "owner" not in json.dumps(pool) and node.key.pubkey not in json.dumps(pool)


def test_dashboard_script_parses() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the dashboard script's syntax is not checked")
    done = subprocess.run([node, "--check", str(WEB / "app.js")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
