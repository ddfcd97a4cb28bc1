"""AITBC's pool hub wire (seed 002; oib/AITBC ``apps/pool-hub``, ``apps/miner/production_miner.py``).

Its miner registers unsigned with an owner API key in the body, heartbeats over HTTP with
``Authorization: Bearer <key>``, and reads its own status; its CLI reads ``/health`` and
``/v1/sla/status``. Shapes are translated here; every rule (admission, account binding, liveness)
is the registry's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from gpupool.api.deps import HubDep
from gpupool.api.dialects import parsed
from gpupool.api.schemas_registry import NAME_PATTERN, TokensAsMicro, twin
from gpupool.errors import Unauthenticated
from gpupool.hub import health as health_report
from gpupool.hub.container import Hub
from gpupool.hub.live import GpuSpec, NodeSpec

router = APIRouter(tags=["aitbc"])
_bearer = HTTPBearer(auto_error=False)
DEFAULT_BASE_PRICE_MICRO = 10_000  # AITBC's default base_price "0.01"
Tag = Annotated[str, Field(max_length=64)]


class AitbcRegisterIn(BaseModel):
    """``MinerRegisterRequest`` of AITBC's pool hub, and the seed's own names (``gpu_vram``,
    ``price_token_per_ksec``, ``tags[]``)."""

    model_config = ConfigDict(extra="ignore")
    miner_id: str = Field(min_length=1, max_length=64, pattern=NAME_PATTERN)
    api_key: str = Field(min_length=1, max_length=256)
    addr: str = Field("localhost", max_length=256)
    proto: str = Field("http", max_length=16)
    gpu_vram_gb: float | None = Field(None, ge=0, le=4096)
    gpu_vram: float | None = Field(None, ge=0, le=4096)
    gpu_name: str | None = Field(None, max_length=128)
    cpu_cores: StrictInt = Field(1, ge=0, le=100_000)
    ram_gb: float = Field(0.0, ge=0, le=1_000_000)
    max_parallel: StrictInt = Field(1, ge=1, le=1024)
    base_price: TokensAsMicro | None = None
    price_token_per_ksec: TokensAsMicro | None = None
    tags: list[Tag] | dict[Tag, Tag | int | float | bool | None] = Field(default_factory=list, max_length=64)
    capabilities: list[Tag] = Field(default_factory=list, max_length=64)
    region: str | None = Field("localhost", max_length=64)

    @model_validator(mode="after")
    def _one_price(self) -> AitbcRegisterIn:
        self.price_token_per_ksec = twin(self.base_price, self.price_token_per_ksec, "base_price")
        return self

    def spec(self, owner: str) -> NodeSpec:
        vram = self.gpu_vram_gb if self.gpu_vram_gb is not None else (self.gpu_vram or 0.0)
        gpus = (GpuSpec(0, "", self.gpu_name or "", vram, ""),) if self.gpu_name or vram else ()
        tags = self.tags.values() if isinstance(self.tags, dict) else self.tags
        return NodeSpec(
            pubkey=None,
            owner=owner,
            miner_id=self.miner_id,
            cpu_cores=self.cpu_cores,
            ram_gb=self.ram_gb,
            price_micro_per_ksec=(
                DEFAULT_BASE_PRICE_MICRO if self.price_token_per_ksec is None else self.price_token_per_ksec
            ),
            max_parallel=self.max_parallel,
            gpus=gpus,
            addr=self.addr,
            proto=self.proto,
            region=self.region,
            tags=tuple(str(t) for t in tags if t is not None and t != ""),
            capabilities=tuple(self.capabilities),
        )


class AitbcHeartbeatIn(BaseModel):
    """``MinerHeartbeatRequest``: memory in MB, as ``nvidia-smi`` reports it."""

    model_config = ConfigDict(extra="ignore")
    status: str = Field("active", max_length=32)
    current_jobs: StrictInt = Field(0, ge=0, le=1_000_000)
    gpu_utilization: float = Field(0, ge=0, le=100)
    memory_used: float = Field(0, ge=0, le=10**9)
    memory_total: float = Field(0, ge=0, le=10**9)
    network_latency_ms: float = Field(0.0, ge=0, le=3_600_000)

    def telemetry(self) -> dict[str, Any]:
        gpu = {"index": 0, "util_pct": self.gpu_utilization, "mem_used_mb": self.memory_used}
        if self.memory_total:
            gpu["mem_total_mb"] = self.memory_total
        return {"queue_len": self.current_jobs, "avg_latency_ms": self.network_latency_ms, "gpus": [gpu]}


async def register(raw: dict[str, Any], hub: Hub) -> dict[str, Any]:
    """``POST /v1/miners/register`` without a signature (the native route hands such bodies here)."""
    body = parsed(AitbcRegisterIn, raw)
    binding = await hub.registry.api_key_binding(body.api_key)
    done = await hub.registry.admit_account_bound(binding, body.spec(binding.owner))
    return {
        "success": True,
        "miner_id": done.miner_id,
        "created": done.created,
        "status": done.status,
        "session_token": done.session_token,
        "lease_ttl_sec": done.lease_ttl_sec,
        "next_heartbeat_sec": done.next_heartbeat_sec,
    }


async def bearer_node(
    hub: HubDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    miner_id: Annotated[str | None, Header(alias="X-Miner-ID", max_length=64)] = None,
) -> str:
    """The node an ``Authorization: Bearer <api_key or session_token>`` speaks for."""
    if credentials is None or not credentials.credentials or len(credentials.credentials) > 256:
        raise Unauthenticated("Missing or malformed Authorization header")
    return await hub.registry.node_for_bearer(credentials.credentials, miner_id)


NodeDep = Annotated[str, Depends(bearer_node)]


@router.post("/v1/miners/heartbeat")
async def heartbeat(body: AitbcHeartbeatIn, hub: HubDep, miner_id: NodeDep) -> dict[str, Any]:
    """HTTP heartbeat (the WebSocket on the same path stays): renews the node's liveness."""
    await hub.sessions.touch(miner_id, body.current_jobs, body.telemetry())
    record = await hub.registry.miner(miner_id)
    return {
        "success": True,
        "miner_id": miner_id,
        "status": record.status,
        "next_heartbeat_sec": hub.settings.heartbeat_interval_sec,
    }


@router.get("/v1/miners/status")
async def miner_status(hub: HubDep, miner_id: NodeDep) -> dict[str, Any]:
    """The miner's own view: AITBC's keys first, then ours."""
    record = await hub.registry.miner(miner_id)
    spec = NodeSpec.from_record(record)
    return {
        "miner_id": record.miner_id,
        "last_seen_at": datetime.fromtimestamp(record.last_seen, UTC).isoformat(),
        "addr": spec.addr,
        "capabilities": list(spec.capabilities),
        "status": record.status,
        "identity": record.identity,
        "owner": record.owner,
        "trust": record.trust,
    }


@router.get("/health")
async def health(hub: HubDep, request: Request, response: Response) -> dict[str, Any]:
    """Seed 002's health body (``db``, ``redis``, ``miners_online`` and their errors); 503 when degraded."""
    grpc_server = getattr(request.app.state, "grpc", None)
    report = await health_report.health(hub, grpc_server.port if grpc_server is not None else None)
    if report.status != "ok":
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {
        "status": report.status,
        "db": report.db,
        "redis": report.redis,
        "miners_online": report.online_miners,
        "online_miners": report.online_miners,
        "db_error": report.db_error,
        "redis_error": report.redis_error,
        "avg_latency_ms": report.avg_latency_ms,
        "version": hub.version,
        "timestamp": report.timestamp,
        "features": report.features,
    }


@router.get("/v1/sla/status")
async def sla_status(hub: HubDep) -> dict[str, Any]:
    return health_report.sla(hub)
