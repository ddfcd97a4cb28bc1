"""What every ``nodepool`` servicer shares: the caller's user, and errors answered as gRPC statuses."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from gpupool.core.model import Principal
from gpupool.errors import GpupoolError, Unauthenticated
from gpupool.hub.container import Hub
from gpupool.rpc.errors import ERROR_CODE_KEY, grpc_status_for

log = logging.getLogger("gpupool.rpc")

R = TypeVar("R")
S = TypeVar("S", bound="Servicer")
RESULT_ARTIFACT = "result.zip"  # the artifact a result zip sent over gRPC is kept as


def adapter(
    method: Callable[[S, Any, grpc.aio.ServicerContext], Awaitable[R]],
) -> Callable[[S, Any, grpc.aio.ServicerContext], Awaitable[R]]:
    """Answer a ``GpupoolError`` with its gRPC status and code; anything else is INTERNAL, logged."""

    @functools.wraps(method)
    async def call(self: S, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await method(self, request, context)
        except GpupoolError as exc:
            await context.abort(grpc_status_for(exc), exc.message, ((ERROR_CODE_KEY, exc.code),))
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("unhandled error in %s", method.__qualname__)
            await context.abort(
                grpc.StatusCode.INTERNAL, "internal server error", ((ERROR_CODE_KEY, "internal_error"),)
            )
        raise AssertionError("unreachable: abort raises")

    return call


class Servicer:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def principal(self, token: str, context: grpc.aio.ServicerContext) -> Principal:
        """The user behind the request's ``token`` field, or behind ``authorization: Bearer``."""
        token = token or bearer(context)
        if not token:
            raise Unauthenticated("missing token")
        return await self.hub.auth.authenticate(token)


def bearer(context: grpc.aio.ServicerContext) -> str:
    """The token of an ``authorization: Bearer <token>`` header; empty without one."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and str(value).lower().startswith("bearer "):
            return str(value)[7:].strip()
    return ""


def client_host(context: grpc.aio.ServicerContext) -> str:
    """``ipv4:10.0.0.1:5000`` → ``10.0.0.1``: login failures are counted per address, as over HTTP."""
    peer = context.peer() or "unknown"
    _, _, rest = peer.partition(":")
    host, _, _ = rest.rpartition(":")
    return host.strip("[]") or peer
