"""The node agent's own cost while idle-heartbeating: CPU (% of one core) and RSS, against bare Pythons.

A real hub (SQLite) asks for a heartbeat every second (10x the default, so the agent works harder than
in production); a real agent replays the loaded H100 readings through its fake NVML on each beat.
Two peers are measured the same way over the same window: a bare ``python -c 'sleep'`` (the floor any
Python agent starts from) and a process that only imports ``gpupool.node.agent`` and sleeps (what the
imports alone cost, so the rest is the agent's running state). The hub's heartbeat counter proves the
agent really beat during the window. Aim: under 1 % of a core and under 60 MB RSS.

    python bench/agent.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

FIXTURE = Path(__file__).parent.parent / "tests" / "fixtures" / "gpu" / "h100-loaded"
OWNER = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
AIM_CPU_PCT, AIM_RSS_MB = 1.0, 60.0
SLEEP = "import time; time.sleep(1e9)"
BEATS = re.compile(r"^poolhub_heartbeats_total (\S+)$", re.MULTILINE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes], timeout_s: float = 60
) -> None:
    """Poll ``ready`` until it holds; fail fast when the process it waits on has died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(what)


def heartbeats(hub_url: str) -> float:
    match = BEATS.search(httpx.get(f"{hub_url}/metrics", timeout=2).text)
    return float(match.group(1)) if match else 0.0


def measure(pids: dict[str, int], seconds: float) -> dict[str, tuple[float, float, float]]:
    """name -> (% of one core, RSS MB at the end, peak RSS MB sampled each second), one shared window."""
    procs = {name: psutil.Process(pid) for name, pid in pids.items()}
    cpu0 = {name: p.cpu_times() for name, p in procs.items()}
    peak = dict.fromkeys(procs, 0.0)
    start = time.monotonic()
    while (left := seconds - (time.monotonic() - start)) > 0:
        time.sleep(min(1.0, left))
        for name, p in procs.items():
            peak[name] = max(peak[name], p.memory_info().rss / 2**20)
    elapsed = time.monotonic() - start
    out = {}
    for name, p in procs.items():
        t0, t1 = cpu0[name], p.cpu_times()
        used = (t1.user + t1.system) - (t0.user + t0.system)
        out[name] = (100 * used / elapsed, p.memory_info().rss / 2**20, peak[name])
    return out


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def run(seconds: float, tmp: str) -> tuple[dict[str, tuple[float, float, float]], float]:
    hub_port, node_port = free_port(), free_port()
    hub_url, node_url = f"http://127.0.0.1:{hub_port}", f"http://127.0.0.1:{node_port}"
    hub_env = {
        **os.environ,
        "GPUPOOL_DB_URL": f"sqlite:///{tmp}/hub.db",
        "GPUPOOL_HUB_DATA_DIR": f"{tmp}/hub",
        "GPUPOOL_STORAGE_PATH": f"{tmp}/artifacts",
        "GPUPOOL_ADMIN_PASSWORD": "bench-admin-password",
        "GPUPOOL_HUB_HEARTBEAT_INTERVAL_SEC": "1",
        "GPUPOOL_HUB_LOG_LEVEL": "warning",
    }
    node_env = {
        **os.environ,
        "REGISTRY_URL": hub_url,
        "OWNER_ADDRESS": OWNER,
        "LISTEN_ADDR": f"127.0.0.1:{node_port}",
        "DATA_DIR": f"{tmp}/node",
        "GPUPOOL_NODE_FAKE_NVML": str(FIXTURE),
        "GPUPOOL_NODE_LOG_LEVEL": "warning",
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        hub = start(["-m", "gpupool", "hub", "--port", str(hub_port)], hub_env)
        procs.append(hub)
        bare = start(["-c", SLEEP])
        imports = start(["-c", f"import gpupool.node.agent; {SLEEP}"])
        procs += [bare, imports]
        wait_for("hub /v1/health", lambda: httpx.get(f"{hub_url}/v1/health", timeout=1).is_success, hub)
        node = start(["-m", "gpupool", "node"], node_env)
        procs.append(node)
        wait_for(
            "node /health 200", lambda: httpx.get(f"{node_url}/health", timeout=1).status_code == 200, node
        )
        online = lambda: httpx.get(f"{hub_url}/v1/health", timeout=1).json()["online_miners"] == 1  # noqa: E731
        wait_for("node online at the hub", online, node)
        time.sleep(3)  # past start-up: imports, registration, first beats, first /health cache fill
        beats0 = heartbeats(hub_url)
        pids = {"gpupool node": node.pid, "bare python": bare.pid, "import node.agent": imports.pid}
        result = measure(pids, seconds)
        beats = heartbeats(hub_url) - beats0
        if node.poll() is not None:
            raise RuntimeError(f"the agent exited during the window with {node.returncode}")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(15)
    return result, beats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result, beats = run(args.seconds, tmp)
    print(f"\nidle agent, heartbeat every 1 s with NVML replay, {args.seconds:.0f} s window")
    print(f"heartbeats the hub received in the window: {beats:.0f}\n")
    print("| process            | CPU % of a core | RSS MB | peak RSS MB |")
    print("|--------------------|----------------:|-------:|------------:|")
    for name, (cpu, rss, peak) in result.items():
        print(f"| {name:<18} | {cpu:>15.2f} | {rss:>6.1f} | {peak:>11.1f} |")
    cpu, rss, peak = result["gpupool node"]
    bare_rss, imports_rss = result["bare python"][1], result["import node.agent"][1]
    print(
        f"\nRSS: agent/bare {rss / bare_rss:.1f}x, agent/imports-only {rss / imports_rss:.2f}x "
        f"(imports {imports_rss - bare_rss:.1f} MB over bare; "
        f"the CLI, the server and running state {rss - imports_rss:.1f} MB more)"
    )
    print(
        f"aim <{AIM_CPU_PCT:g}% of a core: {cpu / AIM_CPU_PCT:.2f} of it, "
        f"{'met' if cpu < AIM_CPU_PCT else 'MISSED'}; "
        f"aim <{AIM_RSS_MB:g} MB (peak): {peak / AIM_RSS_MB:.2f} of it, "
        f"{'met' if peak < AIM_RSS_MB else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
