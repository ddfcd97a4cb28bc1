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


SCRIPTS = ("app.js", "charts.js", "pool.js", "user.js", "admin.js")


async def test_dashboard_page_and_script_are_served_with_a_strict_policy(hub_client: HubClient) -> None:
    page = await hub_client.http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe-eval" not in csp
    assert "style-src 'self';" in csp and "unsafe-inline" not in csp  # styles from files only
    assert "<script>" not in page.text and "style=" not in page.text  # nothing inline: the policy blocks it
    for name in (*SCRIPTS, "vendor/uPlot.iife.min.js"):
        assert f'<script src="/web/{name}"></script>' in page.text
        script = await hub_client.http.get(f"/web/{name}")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        if not name.startswith("vendor/"):
            assert "innerHTML" not in script.text  # API values reach the page through textContent only
    for name in ("app.css", "vendor/uPlot.min.css"):
        assert f'href="/web/{name}"' in page.text
        assert (await hub_client.http.get(f"/web/{name}")).headers["content-type"].startswith("text/css")
    for name in ("index.html", "../config.py", "vendor/README", "nope.js"):  # only the files named
        assert (await hub_client.http.get(f"/web/{name}")).status_code == 404


def _called_paths() -> set[tuple[str, str]]:
    """(method, path) of every API call the scripts make; a path ending in / or = is completed at run time."""
    calls = set()
    for name in SCRIPTS:
        text = (WEB / name).read_text()
        for verb, path in re.findall(r'GP\.(json|api|post|download)\("(/[^"]*)"', text):
            calls.add(("POST" if verb == "post" else "GET", path))
        calls |= {("POST", p) for p in re.findall(r'GP\.json\("(/v1/tasks)", \{ method: "POST"', text)}
    return calls


async def test_every_api_call_of_the_dashboard_answers_for_a_signed_in_admin(hub_client: HubClient) -> None:
    calls = _called_paths()
    paths = {p for _, p in calls}
    assert {"/v1/health", "/v1/me", "/v1/balance", "/v1/pool", "/v1/pool/history", "/v1/auth/login"} <= paths
    admin = await hub_client.admin_headers()
    templates = (await hub_client.http.get("/openapi.json")).json()["paths"]
    for method, path in sorted(calls):
        if method == "POST" or path.endswith(("/", "=")):  # writes and prefixes: the route must exist
            bare = path.split("?")[0]
            assert any(t.startswith(bare.rstrip("/")) for t in templates), path
            continue
        resp = await hub_client.http.get(path, headers=admin)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)


async def test_history_and_node_page_serve_what_the_hub_sampled(
    live_hub_factory: Callable[..., Awaitable[LiveHub]], clock: FakeClock
) -> None:
    hub = await live_hub_factory()
    user = await hub.make_user("charts")
    nvml = ReplayNvml(LOADED)
    node = SimNode(hub, clock, "h100-chart", gpus=registration_gpus(read_inventory(nvml)))
    await node.connect()
    readings = heartbeat_gpus(read_telemetry(nvml))
    await node.ws.send(json.dumps({"ts": clock.now(), "queue_len": 0, "gpus": readings}))
    history = hub.hub.history
    for _ in range(100):
        if hub.hub.live.nodes["h100-chart"].telemetry:
            break
        await asyncio.sleep(0.02)
    await history.sample()
    clock.advance(5)
    await history.sample()
    points = (await hub.http.get("/v1/pool/history", headers=user)).json()["points"]
    assert [p["nodes_online"] for p in points[-2:]] == [1, 1]
    assert points[-1]["gpus_by_model"] == {"NVIDIA H100 80GB HBM3": 1} and points[-1]["tasks_per_s"] == 0
    page = (await hub.http.get("/v1/pool/nodes/h100-chart", headers=user)).json()
    assert page["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3" and "owner" not in page
    last = page["history"][-1]["gpus"][0]
    assert (last["util_pct"], last["power_w"]) == (readings[0]["util_pct"], readings[0]["power_w"])
    assert (await hub.http.get("/v1/pool/nodes/nobody", headers=user)).status_code == 404
    assert (await hub.http.get("/v1/pool/history")).status_code == 401
    assert (await hub.http.get("/v1/admin/users", headers=user)).status_code == 403


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
    for name in SCRIPTS:
        done = subprocess.run([node, "--check", str(WEB / name)], capture_output=True, text=True)
        assert done.returncode == 0, (name, done.stderr)
