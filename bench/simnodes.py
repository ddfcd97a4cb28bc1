"""Simulated nodes: register N signed nodes with varied GPUs, prices, regions and tags, then heartbeat.

Each node has its own key, signs its registration (kind 21000) and keeps a heartbeat WebSocket open,
sending telemetry every ``interval`` seconds and counting the hub's acks. Used by the benchmarks and
by anyone who wants a busy pool to look at:

    python bench/simnodes.py --hub http://127.0.0.1:8203 -n 200 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from gpupool import crypto

GPU_MODELS = [
    ("NVIDIA H100 80GB HBM3", 80.0, "9.0"),
    ("NVIDIA H200", 141.0, "9.0"),
    ("NVIDIA A100-SXM4-80GB", 80.0, "8.0"),
    ("NVIDIA A100-SXM4-40GB", 40.0, "8.0"),
    ("NVIDIA L40S", 48.0, "8.9"),
    ("NVIDIA GeForce RTX 4090", 24.0, "8.9"),
]
REGIONS = ["eu-west", "eu-central", "us-east", "us-west", "ap-south"]
TAGS = ["llm", "diffusion", "embedding", "training", "spot", "secure"]
OWNERS = [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]


def node_body(rng: random.Random, key: crypto.KeyPair, index: int) -> dict[str, Any]:
    """A plausible node: 1-8 GPUs of one model, a price roughly by class, a region and some tags."""
    name, vram, cc = rng.choice(GPU_MODELS)
    count = rng.choice([1, 1, 1, 2, 4, 8])
    price = int(vram * 12_000 * rng.uniform(0.6, 1.4))
    return {
        "miner_id": f"sim-{index:06d}",
        "pubkey": key.pubkey,
        "owner": rng.choice(OWNERS),
        "addr": f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}:8080",
        "proto": "http",
        "gpus": [
            {
                "index": i,
                "uuid": f"GPU-sim-{index:06d}-{i}",
                "name": name,
                "vram_gb": vram,
                "compute_capability": cc,
            }
            for i in range(count)
        ],
        "cpu_cores": 8 * count,
        "ram_gb": 64 * count,
        "price_micro_per_ksec": price,
        "max_parallel": rng.choice([1, 2, 4]),
        "region": rng.choice(REGIONS),
        "tags": rng.sample(TAGS, rng.randint(0, 3)),
        "capabilities": ["inference"] + (["training"] if vram >= 80 else []),
    }


@dataclass
class SimStats:
    registered: int = 0
    refused: int = 0
    heartbeats_sent: int = 0
    acks: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class SimNode:
    body: dict[str, Any]
    key: crypto.KeyPair
    session_token: str | None = None

    async def register(self, http: httpx.AsyncClient, stats: SimStats) -> None:
        signed = crypto.sign_body(self.key, crypto.KIND_REGISTRATION, self.body, created_at=int(time.time()))
        resp = await http.post("/v1/miners/register", json=signed)
        if resp.status_code != 200:
            stats.refused += 1
            stats.errors.append(f"{self.body['miner_id']}: {resp.status_code} {resp.text[:200]}")
            return
        self.session_token = resp.json()["session_token"]
        stats.registered += 1

    async def heartbeat(self, ws_url: str, interval_s: float, until: float, stats: SimStats) -> None:
        if self.session_token is None:
            return
        url = f"{ws_url}/v1/miners/heartbeat?session_token={self.session_token}"
        rng = random.Random(self.body["miner_id"])
        async with websockets.connect(url, max_queue=None) as ws:
            await asyncio.sleep(rng.uniform(0, interval_s))  # spread the beats like real nodes
            while time.monotonic() < until:
                beat = {
                    "ts": time.time(),
                    "queue_len": rng.randint(0, 1),
                    "gpus": [
                        {
                            "index": g["index"],
                            "util_pct": rng.uniform(0, 100),
                            "mem_used_mb": 1024.0,
                            "temp_c": 55,
                        }
                        for g in self.body["gpus"]
                    ],
                }
                await ws.send(json.dumps(beat))
                stats.heartbeats_sent += 1
                reply = json.loads(await ws.recv())
                if reply.get("type") == "ack":
                    stats.acks += 1
                await asyncio.sleep(interval_s)


def make_nodes(n: int, seed: int = 7) -> list[SimNode]:
    rng = random.Random(seed)
    nodes = []
    for i in range(n):
        key = crypto.KeyPair(rng.randbytes(31) + b"\x01")
        nodes.append(SimNode(node_body(rng, key, i), key))
    return nodes


async def register_all(hub_url: str, nodes: list[SimNode], concurrency: int = 32) -> tuple[SimStats, float]:
    stats = SimStats()
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=hub_url, timeout=30) as http:

        async def one(node: SimNode) -> None:
            async with gate:
                await node.register(http, stats)

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in nodes))
    return stats, time.perf_counter() - started


async def heartbeat_all(
    hub_url: str, nodes: list[SimNode], interval_s: float, duration_s: float, stats: SimStats
) -> float:
    ws_url = hub_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    until = time.monotonic() + duration_s
    started = time.perf_counter()
    results = await asyncio.gather(
        *(n.heartbeat(ws_url, interval_s, until, stats) for n in nodes), return_exceptions=True
    )
    stats.errors += [repr(r) for r in results if isinstance(r, BaseException)]
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hub", default="http://127.0.0.1:8203")
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=30.0)
    args = parser.parse_args()
    nodes = make_nodes(args.n)
    stats, reg_s = await register_all(args.hub, nodes)
    print(f"registered {stats.registered}/{args.n} in {reg_s:.2f}s ({stats.registered / reg_s:.0f}/s)")
    elapsed = await heartbeat_all(args.hub, nodes, args.interval, args.duration, stats)
    print(f"heartbeats sent {stats.heartbeats_sent}, acked {stats.acks} in {elapsed:.1f}s")
    for err in stats.errors[:10]:
        print("error:", err)


if __name__ == "__main__":
    asyncio.run(main())
