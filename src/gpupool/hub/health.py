"""What a health probe and an SLA monitor see: the database, Redis, nodes online, match latency.

Seed 002's pool hub answers ``/health`` with ``db``/``redis`` booleans and their errors, and its CLI
reads ``/v1/sla/status``; both are answered here from the hub's own state, so every transport shows
the same figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import text

from gpupool.hub.container import Hub


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: str  # ok | degraded
    db: bool
    redis: bool
    db_error: str | None
    redis_error: str | None
    online_miners: int
    avg_latency_ms: float | None
    timestamp: str
    features: dict[str, Any] = field(default_factory=dict)


async def health(hub: Hub, grpc_port: int | None = None) -> HealthReport:
    """Probe the database and (when configured) Redis; degraded when either fails."""
    db_error = await _probe_db(hub)
    redis_error = await _probe_redis(hub.settings.redis_url) if hub.settings.redis_url else None
    return HealthReport(
        status="ok" if db_error is None and redis_error is None else "degraded",
        db=db_error is None,
        redis=redis_error is None,
        db_error=db_error,
        redis_error=redis_error,
        online_miners=hub.live.online_count(),
        avg_latency_ms=hub.live.avg_latency_ms(),
        timestamp=_iso(hub.clock.now()),
        features={
            "database": "sqlite" if hub.db.is_sqlite else "postgresql",
            "redis": bool(hub.settings.redis_url),
            "registry_mode": hub.settings.registry_mode,
            "grpc_port": grpc_port,
        },
    )


def sla(hub: Hub) -> dict[str, Any]:
    """AITBC's SLA status keys (``status``, ``active_violations``, ``recent_metrics_count``,
    ``timestamp``) plus uptime, match latency percentiles over the recent matches, and node counts."""
    recent = sorted(hub.matchmaking.recent_latency_ms)
    online = hub.live.online_count()
    known = len(hub.live.nodes)
    return {
        "status": "healthy" if online else "degraded",
        "active_violations": 0,
        "recent_metrics_count": len(recent),
        "timestamp": _iso(hub.clock.now()),
        "uptime_sec": max(0.0, hub.clock.now() - hub.started_at),
        "match_latency_ms": {f"p{q}": _percentile(recent, q) for q in (50, 95, 99)},
        "matches_sampled": len(recent),
        "miners_online": online,
        "miners_offline": known - online,
        "miners_known": known,
    }


def _percentile(ordered: list[float], q: int) -> float | None:
    """Nearest-rank percentile of sorted values (None for none)."""
    if not ordered:
        return None
    return round(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)], 4)


async def _probe_db(hub: Hub) -> str | None:
    try:
        async with hub.db.read() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # the probe reports any failure; it never raises past the health route
        return type(exc).__name__ + ": " + str(exc)[:200]
    return None


async def _probe_redis(url: str) -> str | None:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        await client.ping()
    except Exception as exc:
        return type(exc).__name__ + ": " + str(exc)[:200]
    finally:
        await client.aclose()
    return None


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()
