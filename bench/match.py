"""Match latency over registries of 1k, 10k and 100k nodes: the numpy table against the plain loop.

Both answer the same queries over the same nodes (``core/matching.py``: ``NodeTable.match`` and
``match_reference``, which the unit tests hold to identical answers; this script checks that again on
every query it times). Nodes vary in GPU model and count, VRAM, RAM, price, region, tags, capabilities,
trust, latency, queue and online state; queries mix VRAM, GPU count, accelerator, tags, capabilities,
region and price constraints. A last row times a fresh pool of identical nodes, where every score ties
and the ranking falls back to miner ids. Prints the median milliseconds per query and the ratio.

    python bench/match.py [--sizes 1000,10000,100000] [--queries 50]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from gpupool.core.matching import (
    Hints,
    MatchResult,
    NodeSpec,
    NodeTable,
    NodeView,
    Requirements,
    match_reference,
)

MODELS = [
    ("NVIDIA H100 80GB HBM3", 80.0),
    ("NVIDIA H200", 141.0),
    ("NVIDIA A100-SXM4-40GB", 40.0),
    ("NVIDIA L40S", 48.0),
    ("NVIDIA GeForce RTX 4090", 24.0),
]
REGIONS = ["eu-west", "eu-central", "us-east", "us-west", "ap-south"]
TAGS = ["llm", "diffusion", "embedding", "training", "spot", "secure"]
CAPABILITIES = ["inference", "training", "embedding", "vllm", "comfyui"]
Query = tuple[Requirements, Hints]


def make_nodes(n: int, rng: random.Random, alike: bool = False) -> list[NodeView]:
    nodes = []
    for i in range(n):
        name, vram = MODELS[0] if alike else rng.choice(MODELS)
        count = 1 if alike else rng.choice([0, 1, 1, 1, 2, 4, 8])
        spec = NodeSpec(
            miner_id=f"n{rng.getrandbits(48):012x}{i:06d}",
            addr=f"10.0.{i // 256 % 256}.{i % 256}:8080",
            proto="http",
            gpu_vram_gb=[vram] * count,
            gpu_names=[name] * count,
            ram_gb=float(64 * max(count, 1)),
            region="eu-west" if alike else rng.choice(REGIONS),
            price=1_000_000 if alike else int(vram * 12_000 * rng.uniform(0.6, 1.4)),
            max_parallel=1 if alike else rng.choice([1, 2, 4]),
            tags=[] if alike else rng.sample(TAGS, rng.randint(0, 3)),
            capabilities=["inference"] if alike else rng.sample(CAPABILITIES, rng.randint(1, 3)),
            trust=0.5 if alike else rng.uniform(0.05, 1.0),
            latency_ms=None if alike else rng.uniform(20, 800),
        )
        nodes.append(NodeView(spec, alike or rng.random() < 0.9, 0 if alike else rng.randint(0, 1)))
    return nodes


def make_queries(k: int, rng: random.Random) -> list[Query]:
    queries = []
    for _ in range(k):
        req = Requirements(
            min_vram_gb=rng.choice([None, 24.0, 40.0, 80.0]),
            gpu_count=rng.choice([None, None, 1, 2, 4]),
            accel=rng.choice([[], [], ["h100"], ["a100", "h200"]]),
            tags_any=rng.choice([[], [], ["llm"], ["spot", "secure"]]),
            capabilities_any=rng.choice([[], [], ["vllm"], ["inference", "embedding"]]),
        )
        hints = Hints(region=rng.choice([None, None, "eu-west"]), max_price=rng.choice([None, 900_000]))
        queries.append((req, hints))
    return queries


def build(nodes: list[NodeView]) -> NodeTable:
    table = NodeTable()
    for view in nodes:
        table.upsert(view.spec)
        table.heartbeat(view.spec.miner_id, 0.0, queue_len=view.queue_len)
        table.set_online(view.spec.miner_id, view.online)
    return table


def median_ms(run: Callable[[Requirements, Hints], MatchResult], queries: list[Query]) -> float:
    times = []
    for req, hints in queries:
        started = time.perf_counter()
        run(req, hints)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(label: str, nodes: list[NodeView], queries: list[Query]) -> tuple[str, int, float, float]:
    table = build(nodes)
    for req, hints in queries:  # the same answers, or the comparison means nothing
        fast, slow = table.match(req, hints, 5), match_reference(nodes, req, hints, 5)
        assert (fast.candidates, fast.rejected, fast.explain) == (
            slow.candidates,
            slow.rejected,
            slow.explain,
        )
    ours = median_ms(lambda r, h: table.match(r, h, 5), queries)
    reference = median_ms(lambda r, h: match_reference(nodes, r, h, 5), queries)
    print(
        f"  {label} n={len(nodes):>7}: vectorised {ours:8.3f} ms   reference {reference:9.3f} ms", flush=True
    )
    return label, len(nodes), ours, reference


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    rng = random.Random(11)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = [measure("mixed", make_nodes(n, rng), make_queries(args.queries, rng)) for n in sizes]
    rows.append(measure("alike", make_nodes(sizes[-1], rng, alike=True), [(Requirements(), Hints())] * 5))
    print("\n| pool  |       N | vectorised ms | reference ms |  ratio |")
    print("|-------|--------:|--------------:|-------------:|-------:|")
    for label, n, ours, reference in rows:
        print(f"| {label:<5} | {n:>7} | {ours:>13.3f} | {reference:>12.3f} | {reference / ours:>5.0f}x |")
    first, last = rows[0], rows[len(sizes) - 1]
    print(
        f"\nfrom {first[1]} to {last[1]} nodes: vectorised x{last[2] / first[2]:.1f},"
        f" reference x{last[3] / first[3]:.1f}"
    )


if __name__ == "__main__":
    main()
