"""Health and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gpupool.api.deps import HubDep
from gpupool.api.schemas import HealthOut

router = APIRouter(tags=["system"])


@router.get("/v1/health", response_model=HealthOut)
async def health(hub: HubDep) -> HealthOut:
    return HealthOut(
        status="ok",
        version=hub.version,
        online_miners=hub.live.online_count(),
        avg_latency_ms=hub.live.avg_latency_ms(),
        hub_pubkey=hub.rewards.hub_key.pubkey,
        features={
            "database": "sqlite" if hub.db.is_sqlite else "postgresql",
            "redis": bool(hub.settings.redis_url),
            "registry_mode": hub.settings.registry_mode,
        },
    )


@router.get("/metrics", include_in_schema=False)
@router.get("/v1/metrics", include_in_schema=False)
async def metrics(hub: HubDep) -> Response:
    return Response(generate_latest(hub.metrics.registry), media_type=CONTENT_TYPE_LATEST)
