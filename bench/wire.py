"""What the typed hub-node contract costs per message, against the hand-built dicts it replaced.

The heartbeat path carries ~8,000 beats a second at 80,000 nodes (one each 10 s); every dispatch
builds one ``assign`` per task; every result is decoded once. Each row is timed in the same run as its
peer: the dict code it replaced (or a hand-written validation of the same ranges), and ``json.loads``
alone, which every frame pays anyway.

    python bench/wire.py [--n 20000]
"""

from __future__ import annotations

import argparse
import json
import math
import timeit
from typing import Any

from gpupool import wire

BEAT = {
    "ts": 1764775000.5,
    "queue_len": 1,
    "gpus": [
        {"index": i, "util_pct": 87.0, "mem_used_mb": 70000.0, "mem_total_mb": 81559.0, "temp_c": 61.0}
        for i in range(8)
    ],
    "mem_free_gb": 500.0,
    "running_task_ids": ["a" * 32],
}
RESULT = {
    "task_id": "a" * 32,
    "exit_code": 0,
    "status": "succeeded",
    "usage": {"gpu_seconds": 12.5, "duration_sec": 12.5, "cpu_seconds": 3.0, "ram_peak_mb": 512.0},
    "artifacts": [{"path": "out.txt", "size": 3, "sha256": "0" * 64}],
}


def _figure(value: Any, name: str, high: float = 1e12, low: float = 0.0) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(name)
    if not low <= value <= high:
        raise ValueError(name)
    return float(value)


def hand_beat(beat: dict[str, Any]) -> dict[str, Any]:
    """The same ranges checked by hand, the way ``check_usage`` did for results."""
    gpus = beat.get("gpus") or []
    if not isinstance(gpus, list) or len(gpus) > 64:
        raise ValueError("gpus")
    queue = beat.get("queue_len", 0)
    if type(queue) is not int or not 0 <= queue <= 1_000_000:
        raise ValueError("queue_len")
    return {
        "ts": _figure(beat.get("ts"), "ts"),
        "queue_len": queue,
        "gpus": [
            {
                "index": g["index"],
                "util_pct": _figure(g.get("util_pct"), "util_pct", 100),
                "mem_used_mb": _figure(g.get("mem_used_mb"), "mem_used_mb"),
                "mem_total_mb": _figure(g.get("mem_total_mb"), "mem_total_mb"),
                "temp_c": _figure(g.get("temp_c"), "temp_c", 200, -50),
            }
            for g in gpus
        ],
        "mem_free_gb": _figure(beat.get("mem_free_gb"), "mem_free_gb"),
        "running_task_ids": list(beat.get("running_task_ids") or []),
    }


def dict_assign() -> dict[str, Any]:
    task = {
        "task_id": "a" * 32,
        "command": ["python", "train.py"],
        "env": {"A": "1"},
        "timeout_sec": 600.0,
        "gpu_indices": [0],
        "bundle": False,
    }
    return {"type": "assign", "task": task}


def typed_assign() -> dict[str, Any]:
    task = wire.TaskAssignment(
        task_id="a" * 32, command=["python", "train.py"], env={"A": "1"}, timeout_sec=600.0, gpu_indices=[0]
    )
    return wire.encode(wire.Assign(task=task))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    n = parser.parse_args().n
    beat_text = json.dumps(BEAT)
    rows = [
        ("heartbeat: json.loads only", lambda: json.loads(beat_text)),
        ("heartbeat: json.loads + hand check", lambda: hand_beat(json.loads(beat_text))),
        ("heartbeat: wire.decode (text)", lambda: wire.decode(wire.Heartbeat, beat_text)),
        ("heartbeat: json.loads + wire.decode", lambda: wire.decode(wire.Heartbeat, json.loads(beat_text))),
        ("result: wire.decode (dict)", lambda: wire.decode(wire.TaskResult, RESULT)),
        ("assign: dict, as before", dict_assign),
        ("assign: typed + encode", typed_assign),
    ]
    print(f"\n{n} messages each, one process\n")
    print("| message path                          | µs each | per second |")
    print("|---------------------------------------|--------:|-----------:|")
    for name, fn in rows:
        best = min(timeit.repeat(fn, number=n, repeat=3)) / n
        print(f"| {name:<37} | {best * 1e6:>7.2f} | {1 / best:>10,.0f} |")


if __name__ == "__main__":
    main()
