"""Bodies of the registry, node lifecycle and matchmaking endpoints (SPEC §3.2, §3.3)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StringConstraints,
    model_validator,
)

from gpupool import wire
from gpupool.bounds import ADDRESS_PATTERN, PUBKEY_PATTERN, Label, Measure
from gpupool.core.units import MAX_MICRO, micro_from_tokens
from gpupool.errors import InvalidInput

NAME_PATTERN = r"^[A-Za-z0-9_.:\-]+$"


def _to_micro(value: object) -> int:
    try:
        return micro_from_tokens(value, field="tokens")
    except InvalidInput as exc:
        raise ValueError(exc.message.removeprefix("tokens: ")) from exc


# A field named in tokens (SPEC §7): a JSON number or decimal string, held as micro-units once parsed.
TokensAsMicro = Annotated[int, BeforeValidator(_to_micro)]
MicroAmount = Annotated[StrictInt, Field(ge=0, le=MAX_MICRO)]


def twin(tokens: int | None, micro: int | None, name: str) -> int | None:
    """The one micro-unit figure a token field and its ``*_micro`` twin name; they must agree."""
    if tokens is not None and micro is not None and tokens != micro:
        raise InvalidInput(f"{name} and its micro-unit twin disagree", field=name)
    return micro if micro is not None else tokens


class PriceTwin(BaseModel):
    """``price_token_per_ksec`` (tokens) or ``price_micro_per_ksec`` (micro-units), or both, agreeing."""

    price_token_per_ksec: TokensAsMicro | None = None
    price_micro_per_ksec: MicroAmount | None = None

    @model_validator(mode="after")
    def _one_price(self) -> PriceTwin:
        self.price_micro_per_ksec = twin(
            self.price_token_per_ksec, self.price_micro_per_ksec, "price_token_per_ksec"
        )
        return self


class Open(BaseModel):
    """Signed bodies are verified as sent, so unknown fields are kept, not refused."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class GpuSpecIn(BaseModel):
    index: StrictInt = Field(ge=0, le=1023)
    uuid: str = Field(max_length=128)
    name: str = Field(max_length=128)
    vram_gb: StrictFloat | StrictInt = Field(ge=0, le=4096)
    compute_capability: str = Field("", max_length=16)


RunningTaskIds = Annotated[
    list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None,
    Field(max_length=1024, description="the tasks the node runs now; absent: not said"),
]


class RegisterIn(Open, PriceTwin):
    miner_id: str | None = Field(None, min_length=1, max_length=64, pattern=NAME_PATTERN)
    pubkey: str = Field(pattern=PUBKEY_PATTERN, description="64 hex characters or an npub")
    owner: str = Field(pattern=ADDRESS_PATTERN)
    addr: str | None = Field(None, max_length=256)
    proto: str = Field("http", max_length=16)
    gpus: list[GpuSpecIn] = Field(default_factory=list, max_length=64)
    cpu_cores: StrictInt = Field(ge=0, le=100_000)
    ram_gb: StrictFloat | StrictInt = Field(ge=0, le=1_000_000)
    max_parallel: StrictInt = Field(1, ge=1, le=1024)
    region: str | None = Field(None, max_length=64)
    tags: list[Label] = Field(default_factory=list, max_length=64)
    capabilities: list[Label] = Field(default_factory=list, max_length=64)
    running_task_ids: RunningTaskIds = None
    sig_event: dict[str, Any]

    @model_validator(mode="after")
    def _priced(self) -> RegisterIn:
        if self.price_micro_per_ksec is None:
            raise InvalidInput(  # raised past pydantic so that the 422 names the field
                "price_token_per_ksec (tokens) or price_micro_per_ksec is required",
                field="price_token_per_ksec",
            )
        return self


RegisterOut = wire.Registered  # what a node reads back: the wire contract's own type


class WorkerIn(Open):
    pubkey: str = Field(pattern=PUBKEY_PATTERN, description="64 hex characters or an npub")
    owner: str = Field(pattern=ADDRESS_PATTERN)
    node_type: str = Field("node-H100x1", max_length=64)
    sig_event: dict[str, Any] | None = None


class UpdateIn(PriceTwin):
    model_config = ConfigDict(extra="forbid")
    session_token: str = Field(min_length=1, max_length=128)
    miner_id: str | None = Field(None, max_length=64)
    queue_len: StrictInt = Field(0, ge=0, le=1_000_000)
    busy: bool = False
    current_jobs: list[Label] = Field(default_factory=list, max_length=1024)


class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_token: str = Field(min_length=1, max_length=128)


class RequirementsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # a ``false`` GPU count is not 0
    task: Label | None = None
    min_vram_gb: Measure | None = None
    min_ram_gb: Measure | None = None
    gpu_count: int | None = Field(None, ge=0, le=1024)
    accel: list[Label] = Field(default_factory=list, max_length=32)
    tags_any: list[Label] = Field(default_factory=list, max_length=64)
    capabilities_any: list[Label] = Field(default_factory=list, max_length=64)


class HintsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region: str | None = Field(None, max_length=64)
    max_price: TokensAsMicro | None = Field(None, description="tokens per 1000 GPU-seconds")
    max_price_micro: MicroAmount | None = None
    deadline_ms: int | None = Field(None, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _one_cap(self) -> HintsIn:
        self.max_price_micro = twin(self.max_price, self.max_price_micro, "max_price")
        return self


class MatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str = Field(min_length=1, max_length=128)
    requirements: RequirementsIn = Field(default_factory=RequirementsIn)
    hints: HintsIn = Field(default_factory=HintsIn)
    top_k: int = Field(3, ge=1, le=100)


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str = Field(min_length=1, max_length=128)
    miner_id: str = Field(min_length=1, max_length=64)
    outcome: Literal["accepted", "rejected", "failed", "completed"]
    latency_ms: float | None = Field(None, ge=0, le=3_600_000)
    fail_code: str | None = Field(None, max_length=64)
    tokens_spent: int | None = Field(None, ge=0, le=2**63 - 1)


class AllowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entry: str = Field(
        pattern=f"{PUBKEY_PATTERN}|{ADDRESS_PATTERN}|^user:[a-z0-9][a-z0-9_.-]{{1,63}}$",
        description="a node pubkey (hex or npub), an owner 0x address, or user:<name> (account-bound nodes)",
    )


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owner: str = Field(pattern=ADDRESS_PATTERN)
    label: str = Field("", max_length=64)


class OwnApiKeyIn(BaseModel):
    """``POST /v1/api-keys``: an owner makes their own key. ``owner`` is the account paid for the work
    of nodes registered with it: the caller's own (default), or an owner address."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=64)
    owner: str | None = Field(None, min_length=1, max_length=80)


class OwnApiKeyOut(BaseModel):
    id: str
    key: str | None = Field(None, description="the key itself, shown once at creation")
    owner: str
    name: str
    created_at: float
    revoked_at: float | None = None
    admits: bool


# The heartbeat is a hub↔node message: its one definition is the wire contract's.
GpuTelemetryIn = wire.GpuTelemetry
HeartbeatIn = wire.Heartbeat


class LeaseOut(BaseModel):
    miner_id: str
    status: str
    lease_expires_at: float
    lease_ttl_sec: int
    next_heartbeat_sec: float


class GpuOut(BaseModel):
    index: int
    uuid: str
    name: str
    vram_gb: float
    compute_capability: str


class MinerOut(BaseModel):
    miner_id: str
    pubkey: str | None = Field(description="none for an account-bound node")
    owner: str
    identity: Literal["signed", "api_key", "user_token"]
    status: str
    addr: str | None
    proto: str
    region: str | None
    gpus: list[GpuOut]
    cpu_cores: int
    ram_gb: float
    price_token_per_ksec: float
    price_micro_per_ksec: int
    max_parallel: int
    tags: list[str]
    capabilities: list[str]
    trust: float
    latency_ms: float | None
    poc_weight: int
    registered_at: float
    last_seen: float
    telemetry: dict[str, Any] | None


class MinerPage(BaseModel):
    items: list[MinerOut]
    total: int
    page: int
    page_size: int


class WorkerOut(BaseModel):
    pubkey: str
    owner: str | None
    node_type: str | None
    status: str
    signed: bool
    created_at: float
    updated_at: float


class PermissionMode(BaseModel):
    mode: Literal["AllowAll", "Deny"]


class PermissionsOut(BaseModel):
    pubkey: str
    registered: bool
    authorized: bool
    owner: str | None
    signed: bool | None = Field(description="false: the owner was named by an unsigned registration")
    node_type: str | None
    read: PermissionMode
    write: PermissionMode


class AllowOut(BaseModel):
    entry: str
    kind: str


class ApiKeyOut(BaseModel):
    id: str
    owner: str
    label: str
    created_at: float
    revoked_at: float | None
    key: str | None = Field(None, description="the key itself, shown once at creation")


class CandidateOut(BaseModel):
    miner_id: str
    addr: str
    proto: str
    score: float
    eta_ms: float
    price: float = Field(description="tokens per 1000 GPU-seconds")
    price_micro: int
    explain: str


class MatchOut(BaseModel):
    job_id: str
    candidates: list[CandidateOut]
    explain: str
    rejected: dict[str, int]


class FeedbackOut(BaseModel):
    miner_id: str
    trust: float
    latency_ms: float
    applied: bool
