"""Composition root: settings → database → services → transports. Nothing else builds services."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from fastapi import FastAPI

from gpupool import __version__, crypto
from gpupool.api.app import create_app
from gpupool.bundles import BundleLimits
from gpupool.config import HubSettings
from gpupool.core import matching
from gpupool.core.ports import Clock, SystemClock
from gpupool.hub.auth import AuthConfig, AuthService
from gpupool.hub.background import Periodic
from gpupool.hub.channels import NodeChannels
from gpupool.hub.container import Hub
from gpupool.hub.dialout import DialOut, parse_networks
from gpupool.hub.files import TaskFiles
from gpupool.hub.gpu_metrics import GpuTelemetryCollector
from gpupool.hub.history import PoolHistory
from gpupool.hub.ledger import LedgerService
from gpupool.hub.live import LiveRegistry
from gpupool.hub.matchmaking import MatchService
from gpupool.hub.metrics import HubMetrics
from gpupool.hub.passwords import Passwords
from gpupool.hub.poc import PocConfig, PocService
from gpupool.hub.registry import RegistryConfig, RegistryService
from gpupool.hub.rewards import RewardConfig, RewardService
from gpupool.hub.rules import TaskRules
from gpupool.hub.sessions import SessionService
from gpupool.hub.signatures import SignedRequests
from gpupool.hub.tasks import TaskService
from gpupool.hub.throttle import Budget, make_storage
from gpupool.hub.user_state import UserStateCache
from gpupool.hub.users import UserAdmin
from gpupool.store.db import Database


def read_or_create_secret(path: Path) -> str:
    """A random secret kept in a 0600 file, so tokens survive a restart of a single hub."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        secret = secrets.token_urlsafe(48)
        handle.write(secret)
    return secret


def build_hub(settings: HubSettings, clock: Clock | None = None) -> Hub:
    clock = clock or SystemClock()
    db = Database(settings.db_url)
    metrics = HubMetrics()
    storage = make_storage(settings.redis_url)
    window = f"{settings.login_max_failures}/{settings.login_lockout_sec} seconds"
    users = UserStateCache(db, clock, settings.user_cache_sec)
    jwt_secret = (
        settings.jwt_secret.get_secret_value()
        if settings.jwt_secret
        else read_or_create_secret(settings.data_dir / "jwt-secret")
    )
    auth = AuthService(
        db,
        clock,
        Passwords(settings.argon2_time_cost, settings.argon2_memory_kib),
        AuthConfig(
            jwt_secret=jwt_secret,
            access_ttl_s=settings.token_expiry_min * 60,
            refresh_ttl_s=settings.refresh_expiry_days * 86400,
        ),
        failures_by_user=Budget(storage, "login-user", window),
        failures_by_client=Budget(storage, "login-client", window),
        users=users,
    )
    ledger = LedgerService(db, clock, settings.max_amount_micro)
    live = LiveRegistry(db, metrics, matching.Weights.parse(settings.default_weights))
    metrics.registry.register(GpuTelemetryCollector(live))
    sessions = SessionService(
        db,
        clock,
        live,
        settings.session_ttl_sec,
        failures_by_client=Budget(storage, "session-client", settings.session_failure_limit),
    )
    signed = SignedRequests(clock, settings.max_clock_skew_sec)
    rewards_service = RewardService(
        db,
        clock,
        crypto.load_or_create_key(settings.data_dir / "hub-key"),
        RewardConfig(
            settings.reward_epoch_sec,
            settings.base_reward_micro,
            settings.min_settlement_micro,
            count_reported=settings.rewards_count_reported,
        ),
    )
    channels = NodeChannels()
    registry = RegistryService(
        db,
        clock,
        RegistryConfig(settings.registry_mode, settings.session_ttl_sec, settings.heartbeat_interval_sec),
        signed,
        live,
        sessions,
        ledger,
        metrics,
    )
    files = TaskFiles(
        settings.storage_path,
        settings.max_bundle_bytes,
        BundleLimits(settings.max_bundle_unpacked_bytes, settings.max_bundle_files),
    )
    rules = TaskRules(
        dispatch_timeout_sec=settings.dispatch_timeout_sec,
        stop_grace_sec=settings.stop_grace_sec,
        timeout_grace_sec=settings.timeout_grace_sec,
        usage_tolerance=settings.usage_tolerance,
    )
    tasks = TaskService(db, clock, live, channels, signed, rewards_service.epoch_of, files, rules)
    dialout = DialOut(
        clock,
        registry,
        live,
        channels,
        tasks,
        files,
        parse_networks(settings.worker_dial_cidrs),
        settings.grpc_default_price_micro_per_ksec,
    )
    return Hub(
        settings=settings,
        clock=clock,
        db=db,
        metrics=metrics,
        auth=auth,
        user_admin=UserAdmin(db, clock, users),
        ledger=ledger,
        live=live,
        sessions=sessions,
        registry=registry,
        matchmaking=MatchService(db, clock, live, metrics),
        rate_limit=Budget(storage, "api", settings.rate_limit),
        channels=channels,
        tasks=tasks,
        rewards=rewards_service,
        poc=PocService(
            db,
            clock,
            signed,
            live,
            metrics,
            rewards_service.epoch_of,
            PocConfig(settings.poc_round_sec, rewards_service.hub_key.pubkey),
        ),
        periodic=Periodic(metrics.registry),
        version=__version__,
        history=PoolHistory(live, db, metrics, clock),
        dialout=dialout,
    )


def build_app(settings: HubSettings, clock: Clock | None = None) -> FastAPI:
    return create_app(build_hub(settings, clock))
