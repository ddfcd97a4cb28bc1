"""Typed settings, one class per component, built once in ``main.py`` and passed in.

Each class reads its own prefix (``GPUPOOL_HUB_…``) plus the seed-compatible bare names the spec lists
(``HEARTBEAT_GRACE_SEC``, ``DEFAULT_WEIGHTS``, ``REGISTRY_URL`` …) and a ``.env`` file. Defaults run on
a laptop; unsafe defaults are refused outside dev mode.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gpupool.bounds import MAX_BUNDLE_FILES, MAX_BUNDLE_UNPACKED_BYTES
from gpupool.core.units import micro_from_tokens

DEFAULT_DB_URL = "sqlite:///./data/gpupool.db"


def _env(*names: str) -> AliasChoices:
    """Accept several environment names for one field, the first one found wins."""
    return AliasChoices(*names)


class HubSettings(BaseSettings):
    """Settings of the hub process (HTTP, WebSocket, gRPC, scheduler, ledger)."""

    # An empty variable (``GPUPOOL_HUB_JWT_SECRET=`` in a half-filled .env) means unset, not "".
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    host: str = Field("127.0.0.1", validation_alias=_env("GPUPOOL_HUB_HOST"))
    port: int = Field(8203, ge=0, le=65535, validation_alias=_env("GPUPOOL_HUB_PORT"))
    grpc_port: int = Field(
        50051, ge=0, le=65535, validation_alias=_env("GPUPOOL_HUB_GRPC_PORT")
    )  # 0: any free port, logged at start
    grpc_enabled: bool = Field(True, validation_alias=_env("GPUPOOL_HUB_GRPC_ENABLED"))
    grpc_default_price_micro_per_ksec: int = Field(
        1_000_000, gt=0, le=10**15, validation_alias=_env("GPUPOOL_HUB_GRPC_DEFAULT_PRICE_MICRO_PER_KSEC")
    )  # the price cap of a gRPC UploadTask that names none (HiveMind's requests carry no price)
    worker_dial_cidrs: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("GPUPOOL_HUB_WORKER_DIAL_CIDRS")
    )  # networks (comma-separated CIDRs) where the hub may dial a worker other than at its own peer IP
    db_url: str = Field(DEFAULT_DB_URL, validation_alias=_env("GPUPOOL_DB_URL"))
    redis_url: str | None = Field(None, validation_alias=_env("GPUPOOL_REDIS_URL"))
    storage_path: Path = Field(Path("./data/artifacts"), validation_alias=_env("GPUPOOL_STORAGE_PATH"))
    data_dir: Path = Field(Path("./data"), validation_alias=_env("GPUPOOL_HUB_DATA_DIR"))
    dev_mode: bool = Field(True, validation_alias=_env("GPUPOOL_HUB_DEV_MODE"))

    admin_password: SecretStr | None = Field(None, validation_alias=_env("GPUPOOL_ADMIN_PASSWORD"))
    jwt_secret: SecretStr | None = Field(None, validation_alias=_env("GPUPOOL_HUB_JWT_SECRET", "JWT_SECRET"))
    token_expiry_min: int = Field(
        60, gt=0, validation_alias=_env("GPUPOOL_HUB_TOKEN_EXPIRY_MIN", "TOKEN_EXPIRY")
    )
    refresh_expiry_days: int = Field(30, gt=0, validation_alias=_env("GPUPOOL_HUB_REFRESH_EXPIRY_DAYS"))
    argon2_time_cost: int = Field(3, ge=1, validation_alias=_env("GPUPOOL_HUB_ARGON2_TIME_COST"))
    argon2_memory_kib: int = Field(65536, ge=8, validation_alias=_env("GPUPOOL_HUB_ARGON2_MEMORY_KIB"))
    login_max_failures: int = Field(5, ge=1, validation_alias=_env("GPUPOOL_HUB_LOGIN_MAX_FAILURES"))
    login_lockout_sec: int = Field(300, ge=1, validation_alias=_env("GPUPOOL_HUB_LOGIN_LOCKOUT_SEC"))

    max_body_bytes: int = Field(1 << 20, gt=0, validation_alias=_env("GPUPOOL_HUB_MAX_BODY_BYTES"))
    max_bundle_bytes: int = Field(
        100 * 2**20, gt=0, validation_alias=_env("GPUPOOL_HUB_MAX_BUNDLE_BYTES")
    )  # a task's uploaded files, and each artifact
    max_bundle_unpacked_bytes: int = Field(
        MAX_BUNDLE_UNPACKED_BYTES, gt=0, validation_alias=_env("GPUPOOL_HUB_MAX_BUNDLE_UNPACKED_BYTES")
    )  # what a bundle's members may declare in all (a zip or tar bomb is refused at upload)
    max_bundle_files: int = Field(
        MAX_BUNDLE_FILES, gt=0, validation_alias=_env("GPUPOOL_HUB_MAX_BUNDLE_FILES")
    )
    max_amount_micro: int = Field(10**15, gt=0, validation_alias=_env("GPUPOOL_HUB_MAX_AMOUNT_MICRO"))
    registry_mode: Literal["open", "allowlist"] = Field(
        "open", validation_alias=_env("GPUPOOL_REGISTRY_MODE")
    )
    heartbeat_grace_sec: float = Field(30.0, gt=0, validation_alias=_env("HEARTBEAT_GRACE_SEC"))
    heartbeat_interval_sec: float = Field(
        10.0, gt=0, validation_alias=_env("GPUPOOL_HUB_HEARTBEAT_INTERVAL_SEC")
    )
    session_ttl_sec: int = Field(300, gt=0, validation_alias=_env("SESSION_TTL_SEC"))
    # The hub enforces what it decides on tasks whatever a node does (``hub/rules.py``).
    dispatch_timeout_sec: float = Field(
        60.0, gt=0, validation_alias=_env("GPUPOOL_HUB_DISPATCH_TIMEOUT_SEC")
    )  # assigned and no sign of a start (output, bundle fetch, listed running): re-queued
    stop_grace_sec: float = Field(
        15.0, gt=0, validation_alias=_env("GPUPOOL_HUB_STOP_GRACE_SEC")
    )  # a user's stop the node has not confirmed: the hub ends and settles the task itself
    timeout_grace_sec: float = Field(
        30.0, ge=0, validation_alias=_env("GPUPOOL_HUB_TIMEOUT_GRACE_SEC")
    )  # past timeout_sec + this since the assignment: stop pushed, task expired on the hub
    usage_tolerance: float = Field(
        0.02, ge=0, le=1, validation_alias=_env("GPUPOOL_HUB_USAGE_TOLERANCE")
    )  # how far a signed usage claim may exceed the hub's own measure (core/settlement.py)
    max_clock_skew_sec: int = Field(120, gt=0, validation_alias=_env("GPUPOOL_HUB_MAX_CLOCK_SKEW_SEC"))
    flush_interval_sec: float = Field(1.0, gt=0, validation_alias=_env("GPUPOOL_HUB_FLUSH_INTERVAL_SEC"))
    maintenance_interval_sec: float = Field(
        300.0, gt=0, validation_alias=_env("GPUPOOL_HUB_MAINTENANCE_INTERVAL_SEC", "MAINTENANCE_INTERVAL_SEC")
    )
    coordinator_shared_secret: SecretStr | None = Field(
        None, validation_alias=_env("COORDINATOR_SHARED_SECRET")
    )
    # Seed 002's pool hub trusts its coordinator by network (localhost behind an IP allowlist): a
    # request from these networks may match without a credential. Empty: every caller needs one.
    coordinator_cidrs: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("GPUPOOL_HUB_COORDINATOR_CIDRS")
    )
    # GGB: contributions a node records itself are stored and shown; they count for rewards only so.
    rewards_count_reported: bool = Field(False, validation_alias=_env("GPUPOOL_REWARDS_COUNT_REPORTED"))
    default_weights: str = Field(
        "cap:0.4,price:0.2,latency:0.2,trust:0.15,load:0.05", validation_alias=_env("DEFAULT_WEIGHTS")
    )
    reward_epoch_sec: int = Field(
        300, gt=0, validation_alias=_env("REWARD_EPOCH_SEC", "GPUPOOL_HUB_REWARD_EPOCH_SEC")
    )
    base_reward_micro: int = Field(
        100_000_000, ge=0, validation_alias=_env("BASE_REWARD", "GPUPOOL_HUB_BASE_REWARD_MICRO")
    )
    min_settlement_micro: int = Field(
        1_000_000, ge=0, validation_alias=_env("MIN_SETTLEMENT", "GPUPOOL_HUB_MIN_SETTLEMENT_MICRO")
    )
    reward_auto_distribute: bool = Field(
        True,
        validation_alias=_env("GPUPOOL_HUB_REWARD_AUTO_DISTRIBUTE"),
        description="close each finished epoch on a schedule; off: only POST /v1/rewards/distribute does",
    )
    poc_round_sec: int = Field(600, gt=0, validation_alias=_env("GPUPOOL_HUB_POC_ROUND_SEC", "POC_ROUND_SEC"))
    rate_limit: str = Field("50/second", validation_alias=_env("GPUPOOL_HUB_RATE_LIMIT", "RATE_LIMIT"))
    session_failure_limit: str = Field(
        "20/minute", validation_alias=_env("GPUPOOL_HUB_SESSION_FAILURE_LIMIT")
    )  # unknown or expired node session tokens per client address, before 429
    user_cache_sec: float = Field(
        5.0, ge=0, le=300, validation_alias=_env("GPUPOOL_HUB_USER_CACHE_SEC")
    )  # how stale a replica's view of a disabled/deleted user may be (0: read it on every request)
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list, validation_alias=_env("GPUPOOL_HUB_TRUSTED_PROXIES")
    )  # CIDRs whose X-Forwarded-For / Forwarded headers name the client; empty: trust none

    log_level: str = Field("info", validation_alias=_env("GPUPOOL_HUB_LOG_LEVEL", "LOG_LEVEL"))

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _cidr_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [ip_network(v.strip(), strict=False) for v in value.split(",") if v.strip()]
        return value

    @field_validator("worker_dial_cidrs", mode="before")
    @classmethod
    def _dial_cidrs(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            for cidr in value:
                ipaddress.ip_network(str(cidr), strict=False)  # a bad one stops the start, named
        return value

    @field_validator("db_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("GPUPOOL_DB_URL must be a sqlite:// or postgresql:// URL")
        return value

    @field_validator("coordinator_cidrs", mode="before")
    @classmethod
    def _cidrs(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            for cidr in value:
                ipaddress.ip_network(str(cidr), strict=False)  # a ValueError names a bad one
        return value

    @model_validator(mode="after")
    def _enforce_non_default_secrets(self) -> HubSettings:
        if not self.dev_mode and (self.jwt_secret is None or len(self.jwt_secret.get_secret_value()) < 16):
            raise ValueError(
                "GPUPOOL_HUB_JWT_SECRET must be set (16+ characters) when GPUPOOL_HUB_DEV_MODE is false"
            )
        return self


class NodeSettings(BaseSettings):
    """Settings of the node agent; the seed-000 names (``REGISTRY_URL`` …) work as they did there."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    registry_url: str | None = Field(None, validation_alias=_env("REGISTRY_URL", "GPUPOOL_NODE_REGISTRY_URL"))
    owner_address: str | None = Field(
        None, validation_alias=_env("OWNER_ADDRESS", "GPUPOOL_NODE_OWNER_ADDRESS")
    )
    node_type: str = Field("node-H100x1", validation_alias=_env("NODE_TYPE", "GPUPOOL_NODE_TYPE"))
    listen_addr: str = Field("0.0.0.0:8080", validation_alias=_env("LISTEN_ADDR", "GPUPOOL_NODE_LISTEN_ADDR"))
    data_dir: Path = Field(Path("./data"), validation_alias=_env("DATA_DIR", "GPUPOOL_NODE_DATA_DIR"))
    dstack_url: str | None = Field(
        None, validation_alias=_env("DSTACK_BACKEND_DSTACK_URL", "GPUPOOL_NODE_DSTACK_URL")
    )
    fake_nvml: Path | None = Field(None, validation_alias=_env("GPUPOOL_NODE_FAKE_NVML"))
    miner_id: str | None = Field(None, validation_alias=_env("GPUPOOL_NODE_MINER_ID", "MINER_ID"))
    advertise_addr: str | None = Field(None, validation_alias=_env("GPUPOOL_NODE_ADVERTISE_ADDR"))
    price_micro_per_ksec: int | None = Field(
        None, ge=0, le=10**15, validation_alias=_env("GPUPOOL_NODE_PRICE_MICRO_PER_KSEC")
    )
    # tokens, as a seed's name says (SPEC §7): "0.75" is 750000 micro-units
    price_token_per_ksec: str | None = Field(
        None, validation_alias=_env("GPUPOOL_NODE_PRICE_TOKEN_PER_KSEC", "PRICE_TOKEN_PER_KSEC")
    )
    max_parallel: int = Field(1, ge=1, validation_alias=_env("GPUPOOL_NODE_MAX_PARALLEL", "MAX_PARALLEL"))
    max_bundle_unpacked_bytes: int = Field(
        MAX_BUNDLE_UNPACKED_BYTES, gt=0, validation_alias=_env("GPUPOOL_NODE_MAX_BUNDLE_UNPACKED_BYTES")
    )  # a task bundle is unpacked as a stream and refused at this cap, whatever the hub let through
    max_bundle_files: int = Field(
        MAX_BUNDLE_FILES, gt=0, validation_alias=_env("GPUPOOL_NODE_MAX_BUNDLE_FILES")
    )
    region: str | None = Field(None, validation_alias=_env("GPUPOOL_NODE_REGION", "REGION"))
    tags: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_env("GPUPOOL_NODE_TAGS", "TAGS")
    )
    capabilities: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["inference"],
        validation_alias=_env("GPUPOOL_NODE_CAPABILITIES", "CAPABILITIES"),
    )
    api_key: SecretStr | None = Field(None, validation_alias=_env("GPUPOOL_NODE_API_KEY", "OWNER_API_KEY"))
    backoff_max_sec: float = Field(30.0, gt=0, validation_alias=_env("GPUPOOL_NODE_BACKOFF_MAX_SEC"))
    log_level: str = Field("info", validation_alias=_env("GPUPOOL_NODE_LOG_LEVEL", "LOG_LEVEL"))
    # PoC generation goes to a big node when both are set (SPEC §5); empty values mean local generation.
    delegation_url: str | None = Field(None, validation_alias=_env("DELEGATION_URL"))
    delegation_auth_token: SecretStr | None = Field(None, validation_alias=_env("DELEGATION_AUTH_TOKEN"))
    delegation_poll_sec: float = Field(5.0, gt=0, validation_alias=_env("DELEGATION_POLL_SEC"))
    poc_device: str = Field("auto", validation_alias=_env("GPUPOOL_NODE_POC_DEVICE"))
    # Gonka's MLNode API for foreign keys (SPEC §8.3): off unless asked; then only these callers.
    mlnode_api: bool = Field(False, validation_alias=_env("GPUPOOL_NODE_MLNODE_API"))
    mlnode_allow_cidrs: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        validation_alias=_env("GPUPOOL_NODE_MLNODE_ALLOW_CIDRS"),
    )

    @model_validator(mode="after")
    def _one_price(self) -> NodeSettings:
        """The price in micro-units, from either name (tokens or micro); 1 token when neither is set."""
        tokens = None
        if self.price_token_per_ksec is not None:
            try:
                tokens = micro_from_tokens(self.price_token_per_ksec, field="PRICE_TOKEN_PER_KSEC")
            except Exception as exc:
                raise ValueError(str(exc)) from exc
        if tokens is not None and self.price_micro_per_ksec not in (None, tokens):
            raise ValueError("PRICE_TOKEN_PER_KSEC and GPUPOOL_NODE_PRICE_MICRO_PER_KSEC disagree")
        if self.price_micro_per_ksec is None:
            self.price_micro_per_ksec = 1_000_000 if tokens is None else tokens
        return self

    @field_validator("tags", "capabilities", "mlnode_allow_cidrs", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("mlnode_allow_cidrs")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # ValueError names the bad entry
        return value

    @property
    def delegation_mode(self) -> bool:
        token = self.delegation_auth_token.get_secret_value() if self.delegation_auth_token else ""
        return bool((self.delegation_url or "").strip() and token.strip())

    @property
    def listen_host_port(self) -> tuple[str, int]:
        host, _, port = self.listen_addr.rpartition(":")
        return host or "0.0.0.0", int(port)


class DelegationSettings(BaseSettings):
    """The big node's delegation service (``gpupool delegate serve``, SPEC §5); the seed's env names."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    auth_token: SecretStr | None = Field(None, validation_alias=_env("DELEGATION_AUTH_TOKEN"))
    max_sessions: int = Field(10, ge=1, validation_alias=_env("DELEGATION_MAX_SESSIONS"))
    # Sessions generating at once; more wait in ``initializing`` (0: as many as max_sessions).
    max_active: int = Field(0, ge=0, validation_alias=_env("DELEGATION_MAX_ACTIVE"))
    port: int = Field(9090, ge=0, le=65535, validation_alias=_env("DELEGATION_PORT"))
    host: str = Field("0.0.0.0", validation_alias=_env("DELEGATION_HOST"))
    session_ttl_sec: float = Field(330.0, gt=0, validation_alias=_env("DELEGATION_SESSION_TTL_SEC"))
    # How long an ended session stays visible so that its last poll still gets its batches.
    retain_sec: float = Field(120.0, ge=0, validation_alias=_env("DELEGATION_RETAIN_SEC"))
    sweep_interval_sec: float = Field(2.0, gt=0, validation_alias=_env("DELEGATION_SWEEP_SEC"))
    device: str = Field("auto", validation_alias=_env("DELEGATION_DEVICE"))
    log_level: str = Field("info", validation_alias=_env("DELEGATION_LOG_LEVEL", "LOG_LEVEL"))

    def token(self) -> str:
        """The shared token, or ValueError with the message the CLI prints (it is required)."""
        value = self.auth_token.get_secret_value().strip() if self.auth_token else ""
        if not value:
            raise ValueError(
                "DELEGATION_AUTH_TOKEN environment variable is required for the delegation service"
            )
        return value

    @property
    def active_limit(self) -> int:
        return min(self.max_active or self.max_sessions, self.max_sessions)
