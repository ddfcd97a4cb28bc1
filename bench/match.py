"""Match latency over registries of 1k, 10k and 100k nodes: the numpy table against the plain loop.

Both answer the same queries over the same nodes (``core/matching.py``: ``NodeTable.match`` and
``match_reference``, which the unit tests hold to identical answers). Queries mix constraints (VRAM,
GPU count, accelerator, tags, region, price cap). Prints the median milliseconds and the speed-up.

    python bench/match.py [--sizes 1000,10000,100000] [--queries 40]
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


def make_nodes(n: int, rng: random.Random) -> list[NodeView]:
    nodes = []
    for i in range(n):
        name, vram = rng.choice(MODELS)
        count = rng.choice([0, 1, 1, 1, 2, 4, 8])
        spec = NodeSpec(
            miner_id=f"n{i:06d}",
            addr=f"10.0.{i // 256 % 256}.{i % 256}:8080",
            proto="http",
            gpu_vram_gb=[vram] * count,
            gpu_names=[name] * count,
            ram_gb=float(64 * max(count, 1)),
            region=rng.choice(REGIONS),
            price=int(vram * 12_000 * rng.uniform(0.6, 1.4)),
            max_parallel=rng.choice([1, 2, 4]),
            tags=rng.sample(TAGS, rng.randint(0, 3)),
            capabilities=["inference"],
            trust=rng.uniform(0.05, 1.0),
            latency_ms=rng.uniform(20, 800),
        )
        nodes.append(NodeView(spec, rng.random() < 0.9, rng.randint(0, 1)))
    return nodes


def make_queries(k: int, rng: random.Random) -> list[tuple[Requirements, Hints]]:
    queries = []
    for _ in range(k):
        req = Requirements(
            min_vram_gb=rng.choice([None, 24.0, 40.0, 80.0]),
            gpu_count=rng.choice([None, 1, 2, 4]),
            accel=rng.choice([[], ["h100"], ["a100", "h200"]]),
            tags_any=rng.choice([[], ["llm"], ["spot", "secure"]]),
        )
        hints = Hints(region=rng.choice([None, "eu-west"]), max_price=rng.choice([None, 900_000]))
        queries.append((req, hints))
    return queries


def median_ms(
    run: Callable[[Requirements, Hints], MatchResult], queries: list[tuple[Requirements, Hints]]
) -> float:
    times = []
    for req, hints in queries:
        started = time.perf_counter()
        run(req, hints)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=40)
    args = parser.parse_args()
    rng = random.Random(11)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        nodes = make_nodes(n, rng)
        table = NodeTable()
        for view in nodes:
            table.upsert(view.spec)
            table.heartbeat(view.spec.miner_id, 0.0, queue_len=view.queue_len)
            table.set_online(view.spec.miner_id, view.online)
        queries = make_queries(args.queries, rng)
        for req, hints in queries[:3]:  # same answers, or the comparison means nothing
            fast, slow = table.match(req, hints, 5), match_reference(nodes, req, hints, 5)
            assert [c.miner_id for c in fast.candidates] == [c.miner_id for c in slow.candidates]
        ours = median_ms(lambda r, h, t=table: t.match(r, h, 5), queries)
        reference = median_ms(
            lambda r, h, ns=nodes: match_reference(ns, r, h, 5), queries[: max(5, args.queries // 8)]
        )
        rows.append((n, ours, reference))
        print(f"  n={n:>7}: numpy {ours:8.3f} ms   loop {reference:9.3f} ms", flush=True)
    print("\n| nodes   | NodeTable.match ms | reference loop ms | speed-up |")
    print("|--------:|-------------------:|------------------:|---------:|")
    for n, ours, reference in rows:
        print(f"| {n:>7} | {ours:>18.3f} | {reference:>17.3f} | {reference / ours:>7.1f}x |")
    first, last = rows[0], rows[-1]
    growth_ours, growth_loop = last[1] / first[1], last[2] / first[2]
    print(f"\ngrowth from {first[0]} to {last[0]} nodes: numpy x{growth_ours:.1f}, loop x{growth_loop:.1f}")


if __name__ == "__main__":
    main()
