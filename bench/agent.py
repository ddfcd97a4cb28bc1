"""The node agent's own cost while idle-heartbeating: CPU (% of one core) and RSS, against a bare Python.

A real hub (SQLite) asks for a heartbeat every second (10x the default, so the agent works harder than
in production); a real agent replays the loaded H100 readings through its fake NVML on each beat.
The peer, measured the same way in the same run, is a bare ``python -c 'sleep'`` process: the floor
any Python agent starts from. Aim: under 1 % of a core and under 60 MB RSS.

    python bench/agent.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

FIXTURE = Path(__file__).parent.parent / "tests" / "fixtures" / "gpu" / "h100-loaded"
OWNER = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


def measure(pid: int, seconds: float) -> tuple[float, float]:
    """(% of one core, RSS MB) of a process over ``seconds``."""
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    time.sleep(seconds)
    after = proc.cpu_times()
    used = (after.user + after.system) - (before.user + before.system)
    return 100 * used / seconds, proc.memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hub_port, node_port = free_port(), free_port()
        env = {
            **os.environ,
            "GPUPOOL_DB_URL": f"sqlite:///{tmp}/hub.db",
            "GPUPOOL_HUB_DATA_DIR": f"{tmp}/hub",
            "GPUPOOL_ADMIN_PASSWORD": "bench-admin-password",
            "GPUPOOL_HUB_HEARTBEAT_INTERVAL_SEC": "1",
            "GPUPOOL_HUB_LOG_LEVEL": "warning",
        }
        hub = subprocess.Popen(
            [sys.executable, "-m", "gpupool", "hub", "--port", str(hub_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        node_env = {
            **os.environ,
            "REGISTRY_URL": f"http://127.0.0.1:{hub_port}",
            "OWNER_ADDRESS": OWNER,
            "LISTEN_ADDR": f"127.0.0.1:{node_port}",
            "DATA_DIR": f"{tmp}/node",
            "GPUPOOL_NODE_FAKE_NVML": str(FIXTURE),
            "GPUPOOL_NODE_LOG_LEVEL": "warning",
        }
        bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1e9)"])
        node = None
        try:
            wait_http(f"http://127.0.0.1:{hub_port}/v1/health")
            node = subprocess.Popen(
                [sys.executable, "-m", "gpupool", "node"],
                env=node_env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_http(f"http://127.0.0.1:{node_port}/health")
            time.sleep(3)  # past start-up: registration, imports, first beats
            agent_cpu, agent_rss = measure(node.pid, args.seconds)
            bare_cpu, bare_rss = measure(bare.pid, min(args.seconds, 5))
        finally:
            for proc in (node, bare, hub):
                if proc is not None:
                    proc.terminate()
                    proc.wait(15)
    print(f"\nidle agent, heartbeat every 1 s with NVML replay, {args.seconds:.0f}s\n")
    print("| process         | CPU % of a core | RSS MB |")
    print("|-----------------|----------------:|-------:|")
    print(f"| gpupool node    | {agent_cpu:>15.2f} | {agent_rss:>6.1f} |")
    print(f"| bare python     | {bare_cpu:>15.2f} | {bare_rss:>6.1f} |")
    cpu_ok, rss_ok = agent_cpu < 1, agent_rss < 60
    print(
        f"\nRSS ratio agent/bare: {agent_rss / bare_rss:.1f}x; "
        f"aim <1% CPU: {'met' if cpu_ok else 'MISSED'}, <60 MB: {'met' if rss_ok else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
