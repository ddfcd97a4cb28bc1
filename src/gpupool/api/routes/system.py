"""Health, Prometheus metrics, the pool overview and the web dashboard (SPEC §3.7)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gpupool.api.deps import HubDep, PrincipalDep
from gpupool.api.schemas import HealthOut, PoolNodeOut, PoolOut
from gpupool.core.units import tokens_from_micro
from gpupool.errors import NotFound
from gpupool.hub import health as health_report
from gpupool.hub.live import NodeSpec

WEB = resources.files("gpupool") / "web"
# The dashboard loads only its own script and talks only to this hub.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

router = APIRouter(tags=["system"])


@router.get("/v1/health", response_model=HealthOut)
async def health(hub: HubDep, request: Request, response: Response) -> HealthOut:
    """The database and Redis probed on each call; 503 (status ``degraded``) when one is down."""
    grpc_server = getattr(request.app.state, "grpc", None)
    report = await health_report.health(hub, grpc_server.port if grpc_server is not None else None)
    if report.status != "ok":
        response.status_code = 503
    return HealthOut(
        status=report.status,
        version=hub.version,
        online_miners=report.online_miners,
        miners_online=report.online_miners,
        avg_latency_ms=report.avg_latency_ms,
        hub_pubkey=hub.rewards.hub_key.pubkey,
        db=report.db,
        redis=report.redis,
        db_error=report.db_error,
        redis_error=report.redis_error,
        timestamp=report.timestamp,
        features=report.features,
    )


@router.get("/metrics", include_in_schema=False)
@router.get("/v1/metrics", include_in_schema=False)
async def metrics(hub: HubDep) -> Response:
    return Response(generate_latest(hub.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/pool", response_model=PoolOut)
async def pool(hub: HubDep, _principal: PrincipalDep) -> PoolOut:
    """Online nodes with their GPUs and last readings, for any signed-in user (no owners or keys)."""
    nodes = []
    for miner_id, node in sorted(hub.live.nodes.items()):
        if not node.online:
            continue
        spec = NodeSpec.from_record(node.record)
        readings = {int(g.get("index", -1)): g for g in (node.telemetry or {}).get("gpus") or []}
        gpus = [
            {"index": g.index, "name": g.name, "vram_gb": g.vram_gb, **_reading(readings.get(g.index))}
            for g in spec.gpus
        ]
        nodes.append(
            PoolNodeOut(
                miner_id=miner_id,
                region=spec.region,
                gpus=gpus,
                cpu_cores=spec.cpu_cores,
                price_token_per_ksec=tokens_from_micro(spec.price_micro_per_ksec),
                price_micro_per_ksec=spec.price_micro_per_ksec,
                queue_len=node.queue_len,
                max_parallel=spec.max_parallel,
                trust=node.record.trust,
            )
        )
    return PoolOut(nodes_online=len(nodes), gpus_online=sum(len(n.gpus) for n in nodes), nodes=nodes)


def _reading(g: dict[str, object] | None) -> dict[str, object]:
    keys = ("util_pct", "mem_used_mb", "mem_total_mb", "temp_c", "power_w")
    return {k: (g or {}).get(k) for k in keys}


@router.get("/", include_in_schema=False)
async def dashboard() -> Response:
    return Response(
        (WEB / "index.html").read_bytes(),
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": DASHBOARD_CSP, "X-Content-Type-Options": "nosniff"},
    )


# The dashboard's files, by name: nothing else under the package is reachable from here.
WEB_FILES = {
    "app.js": "text/javascript",
    "charts.js": "text/javascript",
    "pool.js": "text/javascript",
    "user.js": "text/javascript",
    "admin.js": "text/javascript",
    "app.css": "text/css",
    "vendor/uPlot.iife.min.js": "text/javascript",
    "vendor/uPlot.min.css": "text/css",
}


@router.get("/web/{name:path}", include_in_schema=False)
async def dashboard_file(name: str) -> Response:
    media = WEB_FILES.get(name)
    if media is None:
        raise NotFound(f"no dashboard file {name[:64]}")
    return Response(
        (WEB / name).read_bytes(),
        media_type=f"{media}; charset=utf-8",
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )
