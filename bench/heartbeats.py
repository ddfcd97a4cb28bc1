"""Heartbeats per second the hub absorbs over WebSocket, against a bare ack server on the same stack.

"ours" is ``gpupool hub`` (SQLite, write-behind flush every second) with N registered simulated nodes,
each sending telemetry as fast as the acks come back (closed loop). "bare" is a uvicorn + Starlette
WebSocket endpoint that parses each message and acks it, nothing else: the ceiling of this stack on this
machine. Both run as separate processes, driven by the same client code, in the same run.

    python bench/heartbeats.py [--nodes 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).parent))
from simnodes import SimNode, make_nodes, register_all

BARE_SERVER = textwrap.dedent(
    """
    import json, sys, uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    async def beat(ws):
        await ws.accept()
        try:
            while True:
                json.loads(await ws.receive_text())
                await ws.send_text('{"type":"ack","next_heartbeat_sec":10.0}')
        except Exception:
            pass

    app = Starlette(routes=[WebSocketRoute("/v1/miners/heartbeat", beat)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


async def closed_loop(ws_url: str, nodes: list[SimNode], seconds: float) -> tuple[int, list[float]]:
    """Every node sends a beat, waits for its ack, sends the next; returns acks and latencies (ms)."""
    latencies: list[float] = []
    until = time.monotonic() + seconds

    async def one(node: SimNode) -> int:
        token = node.session_token or "bare"
        beat = json.dumps(
            {"ts": time.time(), "queue_len": 0, "gpus": [{"index": 0, "util_pct": 50.0, "temp_c": 60}]}
        )
        acks = 0
        async with websockets.connect(f"{ws_url}/v1/miners/heartbeat?session_token={token}") as ws:
            while time.monotonic() < until:
                sent = time.perf_counter()
                await ws.send(beat)
                if json.loads(await ws.recv()).get("type") == "ack":
                    acks += 1
                latencies.append((time.perf_counter() - sent) * 1000)
        return acks

    return sum(await asyncio.gather(*(one(n) for n in nodes))), latencies


def summarize(
    name: str, acks: int, latencies: list[float], seconds: float
) -> tuple[str, float, float, float]:
    q = statistics.quantiles(latencies, n=100)
    return name, acks / seconds, q[49], q[98]


async def run(nodes_n: int, seconds: float) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {
            **os.environ,
            "GPUPOOL_DB_URL": f"sqlite:///{tmp}/bench.db",
            "GPUPOOL_HUB_DATA_DIR": f"{tmp}/data",
            "GPUPOOL_ADMIN_PASSWORD": "bench-admin-password",
            "GPUPOOL_HUB_LOG_LEVEL": "warning",
            "GPUPOOL_HUB_RATE_LIMIT": "100000/second",
        }
        hub = subprocess.Popen(
            [sys.executable, "-m", "gpupool", "hub", "--port", str(port)], env=env, stdout=subprocess.DEVNULL
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_up(f"{url}/v1/health", hub)
            nodes = make_nodes(nodes_n)
            stats, reg_s = await register_all(url, nodes)
            assert stats.registered == nodes_n, stats.errors[:3]
            print(f"registered {nodes_n} signed nodes in {reg_s:.2f}s ({nodes_n / reg_s:.0f}/s)")
            acks, lat = await closed_loop(url.replace("http", "ws", 1), nodes, seconds)
            rows.append(summarize("gpupool hub", acks, lat, seconds))
        finally:
            hub.terminate()
            hub.wait(15)

    port = free_port()
    bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)])
    try:
        wait_up(f"http://127.0.0.1:{port}/", bare)
        acks, lat = await closed_loop(f"ws://127.0.0.1:{port}", make_nodes(nodes_n), seconds)
        rows.append(summarize("bare uvicorn ack", acks, lat, seconds))
    finally:
        bare.terminate()
        bare.wait(15)

    print(f"\n{nodes_n} nodes, closed loop, {seconds:.0f}s each\n")
    print("| server           | heartbeats/s | p50 ms | p99 ms |")
    print("|------------------|-------------:|-------:|-------:|")
    for name, rate, p50, p99 in rows:
        print(f"| {name:<16} | {rate:>12.0f} | {p50:>6.2f} | {p99:>6.2f} |")
    ratio = rows[0][1] / rows[1][1]
    print(f"\nratio ours/bare: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(run(args.nodes, args.seconds))


if __name__ == "__main__":
    main()
