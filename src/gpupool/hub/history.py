"""The last hour of the pool, in memory, for the dashboard's charts: pool figures and GPU readings.

A sample every ``interval_s``: nodes and GPUs online (by model), tasks settled per second (counted
from the settlement postings written since the last sample, a primary-key range), the mean match
latency over the interval, and each online node's last GPU readings (the telemetry its heartbeats
already carry). Ring buffers: an hour at most, and a node's buffer goes with the node after an hour
of silence. Nothing is stored: a restarted hub starts a fresh hour.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from gpupool.core.ports import Clock
from gpupool.hub.live import LiveRegistry, NodeSpec
from gpupool.hub.metrics import HubMetrics
from gpupool.store.dashboard_repo import DashboardRepo
from gpupool.store.db import Database

INTERVAL_S = 5.0
KEEP_S = 3600.0
READINGS = ("util_pct", "mem_used_mb", "mem_total_mb", "temp_c", "power_w")


@dataclass
class PoolHistory:
    live: LiveRegistry
    db: Database
    metrics: HubMetrics
    clock: Clock
    interval_s: float = INTERVAL_S
    pool: deque[dict[str, Any]] = field(init=False)
    nodes: dict[str, deque[dict[str, Any]]] = field(default_factory=dict)
    _last_posting: int | None = None
    _last_match: tuple[float, float] = (0.0, 0.0)  # (sum ms, count) of the match histogram
    _last_ts: float | None = None

    def __post_init__(self) -> None:
        self.pool = deque(maxlen=self._points)
        self.settled = Counter(
            "poolhub_tasks_settled_total", "Tasks settled (paid or refunded)", registry=self.metrics.registry
        )

    @property
    def _points(self) -> int:
        return max(1, int(KEEP_S / self.interval_s))

    async def sample(self) -> dict[str, Any]:
        """Take one sample of the pool and of every online node's GPUs; returns the pool's."""
        now = self.clock.now()
        settled = await self._settled_since_last()
        elapsed = now - self._last_ts if self._last_ts is not None else None
        self._last_ts = now
        by_model: dict[str, int] = {}
        online = 0
        for miner_id, node in self.live.nodes.items():
            if not node.online:
                continue
            online += 1
            spec = NodeSpec.from_record(node.record)
            for gpu in spec.gpus:
                by_model[gpu.name] = by_model.get(gpu.name, 0) + 1
            self._node_point(miner_id, now, node.telemetry)
        self._forget_silent(now)
        point = {
            "ts": now,
            "nodes_online": online,
            "gpus_online": sum(by_model.values()),
            "gpus_by_model": by_model,
            "tasks_per_s": round(settled / elapsed, 4) if elapsed else None,
            "match_latency_ms": self._match_latency(),
        }
        self.pool.append(point)
        return point

    def node(self, miner_id: str) -> list[dict[str, Any]]:
        return list(self.nodes.get(miner_id, ()))

    def _node_point(self, miner_id: str, now: float, telemetry: dict[str, Any] | None) -> None:
        gpus = [
            {"index": int(g.get("index", i)), **{k: g.get(k) for k in READINGS}}
            for i, g in enumerate((telemetry or {}).get("gpus") or [])
            if isinstance(g, dict)
        ]
        ring = self.nodes.setdefault(miner_id, deque(maxlen=self._points))
        ring.append({"ts": now, "gpus": gpus})

    def _forget_silent(self, now: float) -> None:
        for miner_id in [m for m, ring in self.nodes.items() if ring and now - ring[-1]["ts"] > KEEP_S]:
            del self.nodes[miner_id]

    async def _settled_since_last(self) -> int:
        async with self.db.read() as conn:
            count, last = await DashboardRepo(conn).settlements_after(self._last_posting or 0)
        first = self._last_posting is None
        self._last_posting = last
        if first:
            return 0  # the books before this hub started are not this hour's throughput
        self.settled.inc(count)
        return count

    def _match_latency(self) -> float | None:
        registry = self.metrics.registry
        total = registry.get_sample_value("poolhub_match_latency_ms_sum") or 0.0
        count = registry.get_sample_value("poolhub_match_latency_ms_count") or 0.0
        d_sum, d_count = total - self._last_match[0], count - self._last_match[1]
        self._last_match = (total, count)
        return round(d_sum / d_count, 4) if d_count > 0 else None
