"""Why a queued task waits, in words, from the matcher's rejection counts.

A task that stays ``queued`` with no word about it looks broken; the matcher already knows why each
node was filtered out (``MatchResult.rejected``, one count per node under its first failing filter).
This turns those counts, and what the task asked for, into one sentence for ``task show``, the API
and the dashboard. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpupool.core.matching import REASONS


def waiting_reason(
    total_nodes: int, candidates: int, rejected: Mapping[str, int], requirements: Mapping[str, Any]
) -> str:
    """One sentence saying why a queued task has no node yet (or that one is about to take it).

    ``total_nodes`` is every node the hub knows (online or not), ``candidates`` how many passed every
    filter, ``rejected`` the matcher's counts by reason.
    """
    if total_nodes == 0:
        return "no node has registered with the hub"
    if candidates:
        return f"waiting for a free slot: {_nodes(candidates)} could run it"
    online = total_nodes - rejected.get("offline", 0)
    if online <= 0:
        return "no node online"
    reasons = [r for r in REASONS if r != "offline" and rejected.get(r)]
    if not reasons:
        return "no online node matches"
    if len(reasons) == 1:  # one reason covers every online node: say it whole
        return _WHOLE.get(reasons[0], "no online node matches ({})").format(_asked(reasons[0], requirements))
    parts = [f"{_SHORT.get(r, r).format(_asked(r, requirements))} ({_nodes(rejected[r])})" for r in reasons]
    return "no online node can take it: " + ", ".join(parts)


def _nodes(n: int) -> str:
    return f"{n} node" if n == 1 else f"{n} nodes"


_WHOLE = {
    "gpu_count": "no online node has {}",
    "vram": "no online node has {}",
    "ram": "no online node has {}",
    "accel": "no online node has {}",
    "capabilities": "no online node offers {}",
    "tags": "no online node has {}",
    "region": "no online node in {}",
    "price": "price cap below every node's price",
    "busy": "every matching node is busy",
    "deadline": "no matching node answers within the deadline",
}
_SHORT = {
    "gpu_count": "lacks {}",
    "vram": "lacks {}",
    "ram": "lacks {}",
    "accel": "lacks {}",
    "capabilities": "lacks {}",
    "tags": "lacks {}",
    "region": "not in {}",
    "price": "price above the cap",
    "busy": "busy",
    "deadline": "too slow for the deadline",
}


def _asked(reason: str, req: Mapping[str, Any]) -> str:
    """What the task asked for, in the words of the filter that refused a node."""
    gpus = int(req.get("gpu_count") or (1 if req.get("min_vram_gb") else 0))
    asked = {
        "gpu_count": "a GPU" if gpus <= 1 else f"{gpus} GPUs",
        "vram": f"{max(gpus, 1)} GPU(s) with {req.get('min_vram_gb')} GB",
        "ram": f"{req.get('min_ram_gb')} GB of RAM",
        "accel": "a GPU named " + " or ".join(map(str, req.get("accel") or [])),
        "capabilities": "the capability asked for",
        "tags": "one of the tags " + ", ".join(map(str, req.get("tags_any") or [])),
        "region": f"region {req.get('region')}",
    }
    return asked.get(reason, "")
