"""Proof-of-compute rounds and batches (SPEC §3.6): thin adapters over ``hub.poc``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, status
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from gpupool.api.deps import AdminDep, HubDep, RateLimitDep
from gpupool.bounds import MAX_JSON_INT
from gpupool.hub.poc import MAX_BATCH_NONCES, BatchIn

router = APIRouter(prefix="/v1", tags=["poc"])

HEX64 = r"^[0-9a-f]{64}$"
Nonce = Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]
Dist = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Height = Annotated[int, Path(ge=1, le=MAX_JSON_INT)]


class ParamsIn(BaseModel):
    """A full parameter set (``core.poc.ModelParams`` fields); omitted fields take its defaults."""

    model_config = ConfigDict(extra="forbid")
    dim: StrictInt = Field(2048, ge=1, le=16384)
    n_layers: StrictInt = Field(16, ge=1, le=256)
    n_heads: StrictInt = Field(16, ge=1, le=1024)
    n_kv_heads: StrictInt = Field(16, ge=1, le=1024)
    vocab_size: StrictInt = Field(8192, ge=2, le=1 << 20)
    ffn_dim_multiplier: float | None = Field(1.3, gt=0, le=100)
    multiple_of: StrictInt = Field(1024, ge=1, le=1 << 20)
    norm_eps: float = Field(1e-5, gt=0, lt=1)
    rope_theta: float = Field(500000.0, gt=0, le=1e12, allow_inf_nan=False)
    use_scaled_rope: bool = False
    seq_len: StrictInt = Field(16, ge=1, le=8192)


class OpenRoundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    params_name: str | None = Field(None, pattern="^(v1|v2|test|tiny)$", description="default v1")
    params: ParamsIn | None = None
    r_target: float | None = Field(None, gt=0, le=2, description="default DEFAULT_R_TARGET")
    duration_sec: StrictInt | None = Field(None, gt=0, le=7 * 86400, description="default POC_ROUND_SEC")
    batch_size: StrictInt | None = Field(None, ge=1, le=MAX_BATCH_NONCES)
    fraud_threshold: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_params(self) -> OpenRoundIn:
        if self.params_name is not None and self.params is not None:
            raise ValueError("give params_name or params, not both")
        return self


class BatchBody(BaseModel):
    """A signed batch; ``sig_event`` is checked against the raw body, so extra fields are refused."""

    model_config = ConfigDict(extra="forbid")
    public_key: str = Field(pattern=HEX64)
    block_hash: str = Field(min_length=1, max_length=128)
    block_height: StrictInt = Field(ge=1, le=MAX_JSON_INT)
    node_id: StrictInt = Field(0, ge=0, le=1 << 20)
    nonces: list[Nonce] = Field(min_length=1, max_length=MAX_BATCH_NONCES)
    dist: list[Dist] = Field(min_length=1, max_length=MAX_BATCH_NONCES)
    sig_event: dict[str, Any]

    @model_validator(mode="after")
    def _same_length(self) -> BatchBody:
        if len(self.nonces) != len(self.dist):
            raise ValueError("nonces and dist differ in length")
        return self


@router.get("/poc/round")
async def current_round(hub: HubDep) -> dict[str, Any]:
    """The open round nodes should work on; 404 ``no_open_round`` between rounds."""
    return await hub.poc.current()


@router.get("/poc/rounds/{height}")
async def get_round(hub: HubDep, height: Height) -> dict[str, Any]:
    """A round and, once it is validated, each node's verdict and weight."""
    return await hub.poc.round(height)


@router.post("/poc/batches", dependencies=[RateLimitDep])
async def submit_batch(body: BatchBody, request: Request, hub: HubDep) -> dict[str, Any]:
    """A node's signed (kind 21004) batch of qualifying nonces for the open round."""
    batch = BatchIn(body.public_key, body.block_hash, body.block_height, body.node_id, body.nonces, body.dist)
    return await hub.poc.submit(await request.json(), batch)


@router.post("/admin/poc/rounds", status_code=status.HTTP_201_CREATED)
async def open_round(hub: HubDep, admin: AdminDep, body: OpenRoundIn | None = None) -> dict[str, Any]:
    body = body or OpenRoundIn()
    return await hub.poc.open_round(
        admin,
        params_name=body.params_name,
        params=body.params.model_dump() if body.params else None,
        r_target=body.r_target,
        duration_sec=body.duration_sec,
        batch_size=body.batch_size,
        fraud_threshold=body.fraud_threshold,
    )


@router.post("/admin/poc/rounds/{height}/close")
async def close_round(hub: HubDep, _admin: AdminDep, height: Height) -> dict[str, Any]:
    """Close and validate now; a second close returns the stored verdicts and records nothing more."""
    return await hub.poc.close(height)
