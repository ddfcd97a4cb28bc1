"""HiveMind's worker side of ``nodepool`` over the hub's services: registration, uploads, and the dialer.

A HiveMind worker logs in as a user, calls ``RegisterWorkerNode`` with that token and serves its own
``WorkerNodeService`` at ``hostname:port``; the hub admits it as a node bound to that user and dials it
(``hub/dialout.py``): ``HiveMindDialer`` turns the dispatcher's assign and stop into the worker's
``ExecuteTask`` and ``StopTaskExecution``. The worker's ``TaskOutputUpload``, ``TaskResultUpload`` and
``TaskUsage`` carry the user's token; a signed gpupool node may send its session token instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shlex
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gpupool import wire
from gpupool.errors import Forbidden, InvalidInput, PayloadTooLarge, Unauthenticated, Unavailable
from gpupool.hub.dialout import DialedNode, Dispatch
from gpupool.rpc import hivemind
from gpupool.rpc.base import RESULT_ARTIFACT, Servicer, adapter, bearer, client_host
from gpupool.rpc.protos import nodepool_pb2 as pb
from gpupool.rpc.protos import nodepool_pb2_grpc as pb_grpc

log = logging.getLogger("gpupool.rpc")

NAME_MAX, TEXT_MAX = 64, 128
MB = 2**20
STOP_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
_OWN_ENTRYPOINTS = {("sh", "run.sh"), ("bash", "run.sh"), ("python3", "main.py")}  # a worker finds these
TASK_SCRIPT = "task-run.sh"  # where the task's own run.sh goes when the hub writes run.sh


def _bounded(value: str, field: str, limit: int = TEXT_MAX) -> str:
    if len(value) > limit or not value.isprintable():
        raise InvalidInput(f"{field} holds at most {limit} printable characters", field=field)
    return value


def _dialed_node(request: pb.RegisterWorkerNodeRequest) -> DialedNode:
    for name in ("cpu_cores", "memory_gb", "gpu_memory_gb"):
        if getattr(request, name) < 0:
            raise InvalidInput(f"{name} must be >= 0", field=name)
    return DialedNode(
        name=_bounded(request.node_id, "node_id", NAME_MAX),
        host=_bounded(request.hostname, "hostname"),
        port=request.port,
        cpu_cores=request.cpu_cores,
        ram_gb=float(request.memory_gb),
        gpu_name=_bounded(request.gpu_name, "gpu_name"),
        vram_gb=float(request.gpu_memory_gb),
        region=hivemind.region_of(_bounded(request.location, "location")),
    )


class NodeManagerService(Servicer, pb_grpc.NodeManagerServiceServicer):
    @adapter
    async def RegisterWorkerNode(
        self, request: pb.RegisterWorkerNodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusResponse:
        """With the user's token: admit the worker as that user's node. Without (HiveMind's refresh
        every 30 s): renew the lease of the worker ``node_id`` (its username) registered there."""
        node = _dialed_node(request)
        token = bearer(context)
        if token:
            principal = await self.hub.auth.authenticate(token)
            registration = await self.hub.dialout.admit(principal, node, client_host(context))
            status = "pending an admin's approval" if registration.status == "pending" else "registered"
            return pb.StatusResponse(
                success=True,
                message=f"worker {status} as {registration.miner_id}",
                miner_id=registration.miner_id,
            )
        if not node.name:
            raise Unauthenticated("register with authorization: Bearer <user token>")
        miner_id = await self.hub.dialout.renew(node.name, node, client_host(context))
        return pb.StatusResponse(success=True, message="lease renewed", miner_id=miner_id)

    @adapter
    async def ReportStatus(
        self, request: pb.RunningStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunningStatusResponse:
        """A signed node's heartbeat: keeps its session and lease alive, with its running task count."""
        if not request.session_token:
            raise Unauthenticated("session_token is required", code="session_invalid")
        if request.running_tasks < 0:
            raise InvalidInput("running_tasks must be >= 0", field="running_tasks")
        await self.hub.sessions.beat(
            request.session_token, request.running_tasks, None, request.node_id or None, client_host(context)
        )
        return pb.RunningStatusResponse(success=True, message="status recorded")


_WORKER_SIDE = (
    "{} is served by a worker: the hub calls it on the worker's own WorkerNodeService, at the "
    "hostname:port the worker registered"
)


class WorkerNodeService(Servicer, pb_grpc.WorkerNodeServiceServicer):
    async def ExecuteTask(self, request: Any, context: grpc.aio.ServicerContext) -> pb.ExecuteTaskResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _WORKER_SIDE.format("ExecuteTask"))
        raise AssertionError("unreachable: abort raises")

    async def TaskOutput(self, request: Any, context: grpc.aio.ServicerContext) -> pb.TaskOutputResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _WORKER_SIDE.format("TaskOutput"))
        raise AssertionError("unreachable: abort raises")

    async def StopTaskExecution(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> pb.StopTaskExecutionResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _WORKER_SIDE.format("StopTaskExecution"))
        raise AssertionError("unreachable: abort raises")

    @adapter
    async def TaskOutputUpload(
        self, request: pb.TaskOutputUploadRequest, context: grpc.aio.ServicerContext
    ) -> pb.TaskOutputUploadResponse:
        miner_id = await self._node(request.token, request.task_id, context)
        # The one output-chunk contract (wire): stream name, seq range and size checked as on the socket.
        body = {"seq": request.seq if request.HasField("seq") else 0, "stream": request.stream or "stdout"}
        chunk = wire.decode(wire.OutputChunk, {**body, "data": request.output})
        tasks = self.hub.tasks
        if not request.HasField("seq"):
            # HiveMind's worker sends lines without their newline: one chunk, one line of the log.
            output = chunk.data if chunk.data.endswith("\n") else chunk.data + "\n"
            seq = await tasks.node_output_appended(miner_id, request.task_id, chunk.stream, output)
            return pb.TaskOutputUploadResponse(success=True, message=f"seq {seq} stored")
        stored = await tasks.node_output(miner_id, request.task_id, chunk.seq, chunk.stream, chunk.data)
        return pb.TaskOutputUploadResponse(
            success=True, message=f"seq {request.seq} {'stored' if stored else 'seen already'}"
        )

    @adapter
    async def TaskResultUpload(
        self, request: pb.TaskResultUploadRequest, context: grpc.aio.ServicerContext
    ) -> pb.TaskResultUploadResponse:
        """Keeps ``result_zip`` as the artifact ``result.zip``. A user's worker's upload settles the
        task (billed from the hub's clock); a signed node's settles it with ``signed_result``."""
        miner_id = await self._node(request.token, request.task_id, context)
        if not request.result_zip and not request.signed_result:
            raise InvalidInput("send result_zip, signed_result or both", field="signed_result")
        tasks = self.hub.tasks
        bound = tasks.bills_by_clock(miner_id)
        if bound and request.result_zip and tasks.holder(request.task_id) is None:
            return await self._late(miner_id, request)
        artifacts = []
        if request.result_zip:
            tasks.assigned_to(request.task_id, miner_id)
            artifacts.append(await self._keep(request.task_id, request.result_zip))
        if bound:
            exit_code = await asyncio.to_thread(hivemind.exit_code_of_result, request.result_zip)
            row = await tasks.bound_result(miner_id, request.task_id, exit_code or 0, artifacts)
            return pb.TaskResultUploadResponse(
                success=True, message=f"task {hivemind.status_of(row.view.state)}"
            )
        message = [f"{RESULT_ARTIFACT}: {a['size']} bytes, sha256 {a['sha256']}" for a in artifacts]
        if request.signed_result:
            row = await tasks.node_result(miner_id, _signed(request))
            message.append(f"task {row.view.state.value}")
        return pb.TaskResultUploadResponse(success=True, message="; ".join(message))

    @adapter
    async def TaskUsage(
        self, request: pb.TaskUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.TaskUsageResponse:
        """A user's worker's figures are kept and shown, never billed from; a signed node's usage
        travels in its signed result."""
        miner_id = await self._node(request.token, request.task_id, context)
        if not self.hub.tasks.bills_by_clock(miner_id):
            raise InvalidInput(
                "usage is billed from the signed result only: send it in TaskResultUpload.signed_result "
                "(kind 21002)",
                field="usage",
                code="signature_required",
            )
        figures = {
            "cpu_usage": float(request.cpu_usage),
            "memory_usage": float(request.memory_usage),
            "gpu_usage": float(request.gpu_usage),
            "gpu_memory_usage": float(request.gpu_memory_usage),
        }
        self.hub.tasks.bound_usage(miner_id, request.task_id, figures)
        return pb.TaskUsageResponse(success=True, message="usage recorded (shown, not billed)")

    async def _node(self, token: str, task_id: str, context: grpc.aio.ServicerContext) -> str:
        """The node speaking: a signed node by its session token, a user's worker by the user's token
        and the task it holds."""
        token = token or bearer(context)
        if not token:
            raise Unauthenticated("token (the worker's user token, or a node's session token) is required")
        if token.count(".") == 2:  # a JWT: a user's worker
            principal = await self.hub.auth.authenticate(token)
            return await self.hub.dialout.bound_node(principal, task_id)
        return await self.hub.sessions.resolve(token, client=client_host(context))

    async def _late(self, miner_id: str, request: pb.TaskResultUploadRequest) -> pb.TaskResultUploadResponse:
        """The result zip of a task the hub stopped (and settled) on the user's word: kept, as
        HiveMind's pool keeps a stopped task's partial results."""

        async def keep() -> list[dict[str, Any]]:
            return [await self._keep(request.task_id, request.result_zip)]

        await self.hub.tasks.late_artifacts(miner_id, request.task_id, keep)
        return pb.TaskResultUploadResponse(success=True, message="result kept; the task was stopped")

    async def _keep(self, task_id: str, result_zip: bytes) -> dict[str, Any]:
        files = self.hub.tasks.files
        if len(result_zip) > files.max_bytes:
            raise PayloadTooLarge(
                f"result_zip over {files.max_bytes} bytes", details={"limit": files.max_bytes}
            )

        async def one() -> AsyncIterator[bytes]:
            yield result_zip

        size, digest = await files.save(files.artifact(task_id, RESULT_ARTIFACT), one())
        return {"path": RESULT_ARTIFACT, "size": size, "sha256": digest}


def _signed(request: pb.TaskResultUploadRequest) -> dict[str, Any]:
    try:
        raw = json.loads(request.signed_result)
    except ValueError as exc:
        raise InvalidInput("signed_result is not JSON", field="signed_result") from exc
    if not isinstance(raw, dict) or raw.get("task_id") != request.task_id:
        raise InvalidInput("signed_result's task_id must be the request's", field="task_id")
    return raw


# -- the hub dialing a HiveMind worker -----------------------------------------------------------------


def entrypoint(dispatch: Dispatch) -> tuple[dict[str, bytes], dict[str, str]]:
    """The files a HiveMind worker needs to run ``command`` with ``env``: it runs ``run.sh`` (or
    ``main.py``) of the zip, so any other command, or any env, goes into a ``run.sh`` the hub writes
    (the task's own ``run.sh``, if any, moved aside to ``task-run.sh``)."""
    command = tuple(dispatch.command)
    if command in _OWN_ENTRYPOINTS and not dispatch.env:
        return {}, {}
    renames = {}
    if "run.sh" in command:
        renames = {"run.sh": TASK_SCRIPT}
        command = tuple(TASK_SCRIPT if part == "run.sh" else part for part in command)
    exports = [f"export {k}={shlex.quote(v)}" for k, v in dispatch.env.items() if k.isidentifier()]
    script = "\n".join(["#!/bin/sh", *exports, f"exec {shlex.join(command)}", ""])
    return {"run.sh": script.encode()}, renames


class HiveMindDialer:
    """Calls HiveMind workers' ``WorkerNodeService``, one channel per worker address."""

    def __init__(self, max_message_bytes: int) -> None:
        self.options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def _stub(self, address: str) -> pb_grpc.WorkerNodeServiceStub:
        """A stub on the worker's channel, once it connects: a worker that cannot be reached within
        ``CONNECT_TIMEOUT_S`` (as HiveMind's pool waits) holds up no dispatch round for longer."""
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address, options=self.options)
        try:
            await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT_S)
        except TimeoutError as exc:
            raise Unavailable(
                f"worker {address} unreachable: no connection within {CONNECT_TIMEOUT_S} s"
            ) from exc
        return pb_grpc.WorkerNodeServiceStub(channel)  # type: ignore[no-untyped-call]

    async def execute(self, address: str, dispatch: Dispatch) -> None:
        extra, renames = entrypoint(dispatch)
        task_zip = await asyncio.to_thread(dispatch.zip_with, extra, renames)
        needs = dispatch.requirements
        request = pb.ExecuteTaskRequest(
            task_id=dispatch.task_id,
            task_zip=task_zip,
            memory_gb=hivemind.int32(math.ceil(float(needs.get("min_ram_gb") or 0))),
            gpu_memory_gb=hivemind.int32(math.ceil(float(needs.get("min_vram_gb") or 0))),
        )
        # As HiveMind's pool: 30 s, plus 2 s per MB (at least 10), at most 120 s.
        timeout = min(30 + max(len(task_zip) / MB * 2, 10), 120)
        try:
            answer = await (await self._stub(address)).ExecuteTask(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(f"worker {address} unreachable: {exc.code().name}") from exc
        if not answer.success:
            raise Forbidden(f"worker {address} refused the task: {answer.message}", code="node_refused")

    async def stop(self, address: str, task_id: str) -> None:
        try:
            answer = await (await self._stub(address)).StopTaskExecution(
                pb.StopTaskExecutionRequest(task_id=task_id), timeout=STOP_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(f"worker {address} unreachable: {exc.code().name}") from exc
        if not answer.success:  # it had ended already: nothing left to stop
            log.info("worker %s did not stop %s: %s", address, task_id, answer.message)

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()
