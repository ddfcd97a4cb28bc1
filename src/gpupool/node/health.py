"""The node's own HTTP API on ``LISTEN_ADDR``: ``GET /health`` as SPEC §4 shows, and ``GET /``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import BaseRoute, Route

from gpupool import __version__
from gpupool.errors import GpupoolError
from gpupool.node.gpu import Inventory, health_metadata

TOPIC = "dstack-gpu-monitor"
BACKEND_VERSION = "1.0.0"  # the DStack backend's BackendInfo.version, which its watchers read
CACHE_S = 2.0


def create_health_app(
    pubkey: str,
    ip_address: str,
    read_inventory: Callable[[], Inventory],
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """``read_inventory`` is called in a thread at most every ``CACHE_S`` seconds (NVML is not free).

    ``extra_routes`` mounts the PoW API (``pow/api.py``) on the same port.

    Plain Starlette, not FastAPI: two fixed routes do not need OpenAPI, and the agent stays small.
    """
    cached: dict[str, tuple[float, int, dict[str, object]]] = {}

    async def health_body() -> tuple[int, dict[str, object]]:
        hit = cached.get("health")
        if hit is not None and time.monotonic() - hit[0] < CACHE_S:
            return hit[1], hit[2]
        try:
            inventory = await asyncio.to_thread(read_inventory)
            status, code = "Available", 200
            metadata = json.dumps(health_metadata(inventory), separators=(",", ":"))
        except (GpupoolError, OSError) as exc:
            status, code = "Unavailable", 503
            metadata = f"Error: {exc}"
        body: dict[str, object] = {
            "version": BACKEND_VERSION,
            "topic": TOPIC,
            "pubkeys": [pubkey],
            "status": status,
            "metadata": metadata,
            "ip_address": ip_address,
            "gpupool_version": __version__,
        }
        cached["health"] = (time.monotonic(), code, body)
        return code, body

    async def health(_request: Request) -> JSONResponse:
        code, body = await health_body()
        return JSONResponse(body, status_code=code)

    async def root(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("DStack Backend Health Monitor")

    # CORS as the backend's CorsLayer::permissive(): dashboards in browsers read /health directly.
    cors = Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
    return Starlette(routes=[Route("/health", health), Route("/", root), *extra_routes], middleware=[cors])
