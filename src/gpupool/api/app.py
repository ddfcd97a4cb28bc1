"""The FastAPI application factory: routers, error handlers and middleware over one ``Hub``."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gpupool.api import errors
from gpupool.api.middleware import BodyLimitMiddleware, MetricsMiddleware
from gpupool.api.routes import auth, ledger, matching, miners, poc, registry, rewards, system, tasks
from gpupool.hub.container import Hub


def create_app(hub: Hub) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        generated = await hub.start()
        if generated:
            # Printed once, to the console only: the log never carries a secret.
            print(
                f"First start: created user 'admin' with password: {generated}", file=sys.stderr, flush=True
            )
        try:
            yield
        finally:
            await hub.stop()

    app = FastAPI(title="gpupool hub", version=hub.version, lifespan=lifespan)
    app.state.hub = hub
    errors.install(app)
    app.include_router(auth.router)
    app.include_router(ledger.router)
    app.include_router(registry.router)
    app.include_router(miners.router)
    app.include_router(matching.router)
    app.include_router(tasks.router)
    app.include_router(rewards.router)
    app.include_router(poc.router)
    app.include_router(system.router)
    app.add_middleware(MetricsMiddleware, metrics=hub.metrics)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=hub.settings.max_body_bytes, upload_bytes=hub.settings.max_bundle_bytes
    )
    return app
