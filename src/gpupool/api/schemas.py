"""Request and response bodies of the hub's HTTP API (Pydantic v2); amounts are integer micro-units."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

Key = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginIn(Strict):
    username: StrictStr = Field(min_length=1, max_length=64)
    password: StrictStr = Field(min_length=1, max_length=1024)


class RefreshIn(Strict):
    refresh_token: StrictStr = Field(min_length=1, max_length=256)


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


class UserIn(Strict):
    username: StrictStr = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{1,63}$")
    password: StrictStr = Field(min_length=8, max_length=1024)
    role: StrictStr = Field("user", pattern="^(admin|user|coordinator)$")


class UserOut(BaseModel):
    id: int
    username: str
    role: str
    account: str


class BalanceOut(BaseModel):
    account: str
    available: int
    held: int


class TransferIn(Strict):
    to: StrictStr = Field(
        min_length=1,
        max_length=80,
        pattern=r"^(0x[0-9a-fA-F]{40}|(user:)?[a-z0-9][a-z0-9_.-]{1,63})$",
        description="a username (bob or user:bob) or an owner's 0x address",
    )
    amount: StrictInt = Field(gt=0, description="micro-units (1 token = 1,000,000)")
    idempotency_key: StrictStr = Key


class TransferOut(BaseModel):
    id: int
    kind: str
    source: str | None = Field(serialization_alias="from")
    to: str | None
    amount: int
    idempotency_key: str | None
    created_at: float
    replayed: bool = False


class TransferList(BaseModel):
    transfers: list[TransferOut]
    next_before: int | None


class TrialBalanceOut(BaseModel):
    balanced: bool
    total: int
    accounts: list[dict[str, Any]]
    totals_by_type: dict[str, int]


class HealthOut(BaseModel):
    status: str  # ok | degraded
    version: str
    online_miners: int
    miners_online: int  # seed 002's name for the same count
    avg_latency_ms: float | None
    hub_pubkey: str
    db: bool
    redis: bool
    db_error: str | None
    redis_error: str | None
    timestamp: str
    features: dict[str, Any]


class PoolGpuOut(BaseModel):
    index: int
    name: str
    vram_gb: float
    util_pct: float | None = None
    mem_used_mb: float | None = None
    mem_total_mb: float | None = None
    temp_c: float | None = None
    power_w: float | None = None


class PoolNodeOut(BaseModel):
    miner_id: str
    region: str | None
    gpus: list[PoolGpuOut]
    cpu_cores: int
    price_token_per_ksec: float
    price_micro_per_ksec: int
    queue_len: int
    max_parallel: int
    trust: float


class PoolOut(BaseModel):
    nodes_online: int
    gpus_online: int
    nodes: list[PoolNodeOut]
