"""The delegation HTTP API on port 9090 (SPEC §5): thin routes over ``SessionManager``.

Every route answers under ``/api/v1/delegation`` and at the root (``/start``, ``/batches/{id}``, ``/stop``,
``/status``), as the fork's big node serves it now (SPEC §8.3); the token is read from a Bearer header
or ``?auth_token=``.

Errors answer ``{"detail": message}`` as the reference service does (a Gonka small node reads
``detail``), plus our usual ``error`` object; the status comes from the one table in ``error_status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from gpupool import errors
from gpupool.config import DelegationSettings
from gpupool.core.poc_batch import DEFAULT_R_TARGET, FRAUD_THRESHOLD
from gpupool.delegation.sessions import GeneratorFactory, SessionManager
from gpupool.error_status import error_body, status_for
from gpupool.pow.rounds import BatchGenerator, PowRound, engine_generator

log = logging.getLogger("gpupool.delegation")
PREFIX = "/api/v1/delegation"


class StartRequest(BaseModel):
    node_id: int = 0
    node_count: int = 1
    block_hash: str
    block_height: int
    public_key: str
    batch_size: int = 100
    r_target: float = DEFAULT_R_TARGET
    fraud_threshold: float = FRAUD_THRESHOLD
    params: dict[str, Any] | str | None = None
    auth_token: str = ""
    callback_url: str | None = None


class StopRequest(BaseModel):
    session_id: str
    auth_token: str = ""


def _token_of(request: Request, query_token: str | None) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return query_token


async def _error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.GpupoolError)
    status = status_for(exc)
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, errors.RateLimited) else {}
    body = {"detail": exc.message, **error_body(exc.code, exc.message, exc.details)}
    return JSONResponse(body, status_code=status, headers=headers)


async def _invalid(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
    message = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems)
    return JSONResponse(
        {"detail": message, **error_body("invalid_input", message, {"errors": problems})}, status_code=422
    )


def _throughput(generator: BatchGenerator | None) -> dict[str, Any]:
    """Beyond the spec's fields: the round's rate on the big node, for the small node's status."""
    if generator is None:
        return {}
    stats = generator.stats()
    return {
        "nonces_computed": stats.nonces_computed,
        "nonces_per_s": stats.nonces_per_s,
        "qualified_per_s": stats.qualified_per_s,
    }


def create_delegation_app(
    settings: DelegationSettings,
    *,
    factory: GeneratorFactory | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The service's app; ``factory`` builds a session's generator (the engine by default)."""
    manager = SessionManager(
        settings.token(),
        factory or (lambda r: engine_generator(r, settings.device)),
        clock,
        max_sessions=settings.max_sessions,
        max_active=settings.active_limit,
        ttl_s=settings.session_ttl_sec,
        retain_s=settings.retain_sec,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async def sweep_forever() -> None:
            while True:
                await asyncio.sleep(settings.sweep_interval_sec)
                try:
                    await asyncio.to_thread(manager.sweep_and_stop)
                except Exception:
                    log.exception("delegation sweep failed")

        sweeper = asyncio.create_task(sweep_forever())
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await asyncio.to_thread(manager.close)

    app = FastAPI(title="gpupool delegation", lifespan=lifespan)
    app.state.manager = manager
    app.add_exception_handler(errors.GpupoolError, _error)
    app.add_exception_handler(RequestValidationError, _invalid)

    @app.post(f"{PREFIX}/start")
    @app.post("/start")
    def start(body: StartRequest) -> dict[str, Any]:
        manager.check_token(body.auth_token)
        pow_round = PowRound.from_json(body.model_dump())
        session = manager.start(pow_round)
        return {
            "session_id": session.session_id,
            "status": session.status,
            "message": "Session started" if session.generator else "Session queued: waiting for free GPUs",
            "gpu_count": session.gpu_count,
        }

    @app.get(f"{PREFIX}/batches/{{session_id}}")
    @app.get("/batches/{session_id}")
    def batches(session_id: str, request: Request, auth_token: str | None = None) -> dict[str, Any]:
        manager.check_token(_token_of(request, auth_token))
        session, fresh = manager.poll(session_id)
        return {
            "session_id": session.session_id,
            "batches": [b.to_dict() for b in fresh],
            "session_active": session.active,
            "status": session.status,
            "total_batches_generated": session.total_generated,
            **_throughput(session.generator),
        }

    @app.post(f"{PREFIX}/stop")
    @app.post("/stop")
    def stop(body: StopRequest) -> dict[str, Any]:
        manager.check_token(body.auth_token)
        session = manager.stop(body.session_id)
        return {
            "session_id": session.session_id,
            "status": session.status,
            "message": "Session stopped",
            "total_batches_generated": session.total_generated,
        }

    @app.get(f"{PREFIX}/status")
    @app.get("/status")
    def status() -> dict[str, Any]:
        return manager.status()

    return app
