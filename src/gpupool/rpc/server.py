"""The hub's gRPC server (SPEC §6): started and stopped with the HTTP app, on the same event loop.

It serves HiveMind's four ``nodepool`` services plus server reflection, so ``grpcurl`` works without
the ``.proto`` (which ships in ``gpupool/rpc/protos/`` for clients that want it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection

from gpupool.hub.container import Hub
from gpupool.hub.metrics import HubMetrics
from gpupool.rpc.services import add_services
from gpupool.rpc.workers import HiveMindDialer

log = logging.getLogger("gpupool.rpc")

MESSAGE_OVERHEAD = 1 << 20  # room for the fields around an upload's bytes
STOP_GRACE_S = 5.0


@dataclass
class GrpcServer:
    server: grpc.aio.Server
    port: int
    dialer: HiveMindDialer

    async def stop(self) -> None:
        """Refuse new calls, give running ones ``STOP_GRACE_S`` to end, then cancel them."""
        await self.server.stop(STOP_GRACE_S)
        await self.dialer.close()


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts every call by method and status code and times it, as ``MetricsMiddleware`` does HTTP."""

    def __init__(self, metrics: HubMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:  # unknown methods; reflection's stream
            return handler
        method, inner, metrics = details.method, handler.unary_unary, self.metrics

        async def measured(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, code = time.perf_counter(), grpc.StatusCode.OK
            try:
                return await inner(request, context)
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                metrics.grpc_requests.labels(method, code.name).inc()
                metrics.grpc_latency.labels(method).observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            measured,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def start_grpc(hub: Hub) -> GrpcServer:
    """Bind ``GPUPOOL_HUB_GRPC_PORT`` (0: any free one) on the hub's host and start serving.

    A port that cannot be bound stops the hub's start, as a taken HTTP port does; SO_REUSEPORT is off
    so a second hub on the same port fails instead of silently sharing its calls.
    """
    settings = hub.settings
    limit = settings.max_bundle_bytes + MESSAGE_OVERHEAD
    server = grpc.aio.server(
        interceptors=[MetricsInterceptor(hub.metrics)],
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
    )
    names = add_services(server, hub)
    dialer = HiveMindDialer(limit)
    hub.dialout.dialer = dialer  # the hub dials HiveMind workers while it serves their protocol
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    try:
        port = server.add_insecure_port(f"{host}:{settings.grpc_port}")
    except RuntimeError as exc:
        raise OSError(f"cannot serve gRPC on {host}:{settings.grpc_port}: {exc}") from exc
    if port == 0:  # older grpcio answers 0 instead of raising
        raise OSError(f"cannot serve gRPC on {host}:{settings.grpc_port}: the port is taken")
    await server.start()
    log.info("gRPC (nodepool) on %s:%d", host, port)
    return GrpcServer(server, port, dialer)
