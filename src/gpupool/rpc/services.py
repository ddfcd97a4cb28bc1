"""HiveMind's ``nodepool`` services (SPEC §6) as thin adapters over the hub's services.

Each method reads its request, calls the same service the HTTP route calls and writes the answer;
``_adapter`` turns a ``GpupoolError`` into the gRPC status of ``rpc/errors.py``. Authentication is the
HTTP API's: a user's JWT access token (request field ``token`` or ``authorization: Bearer``), or a
node's session token for the node-side calls.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
from pydantic import ValidationError

from gpupool import wire
from gpupool.api.schemas_tasks import TaskIn
from gpupool.core.model import Principal, TokenPair
from gpupool.core.scheduling import TaskState
from gpupool.errors import (
    Forbidden,
    GpupoolError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    TokenInvalid,
    Unauthenticated,
)
from gpupool.hub.container import Hub
from gpupool.hub.tasks import NewTask
from gpupool.rpc.errors import ERROR_CODE_KEY, grpc_status_for
from gpupool.rpc.protos import nodepool_pb2 as pb
from gpupool.rpc.protos import nodepool_pb2_grpc as pb_grpc
from gpupool.store.tasks_repo import TaskRow

log = logging.getLogger("gpupool.rpc")

R = TypeVar("R")
S = TypeVar("S", bound="_Servicer")

# What a zip runs when UploadTask names no command: the first of these found at the zip's top.
DEFAULT_ENTRYPOINTS = (("run.sh", ["sh", "run.sh"]), ("main.py", ["python3", "main.py"]))
CLIENT_TASK_ID_MAX = 128
ALL_TASKS_PAGE = 500  # tasks read per query by GetAllUserTasks
RESULT_ARTIFACT = "result.zip"


def _adapter(
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


class _Servicer:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def principal(self, token: str, context: grpc.aio.ServicerContext) -> Principal:
        """The user behind the request's ``token`` field, or behind ``authorization: Bearer``."""
        if not token:
            for key, value in context.invocation_metadata() or ():
                if key == "authorization" and str(value).lower().startswith("bearer "):
                    token = str(value)[7:].strip()
        if not token:
            raise Unauthenticated("missing token")
        return self.hub.auth.authenticate(token)


def _client_host(context: grpc.aio.ServicerContext) -> str:
    """``ipv4:10.0.0.1:5000`` → ``10.0.0.1``: login failures are counted per address, as over HTTP."""
    peer = context.peer() or "unknown"
    _, _, rest = peer.partition(":")
    host, _, _ = rest.rpartition(":")
    return host.strip("[]") or peer


def _renewal(pair: TokenPair) -> dict[str, Any]:
    """What Login and RefreshToken add to HiveMind's answer: the refresh token and the lifetime."""
    return {"refresh_token": pair.refresh_token, "expires_in": pair.expires_in}


# -- users --------------------------------------------------------------------------------------------


class UserService(_Servicer, pb_grpc.UserServiceServicer):
    @_adapter
    async def Login(self, request: pb.LoginRequest, context: grpc.aio.ServicerContext) -> pb.LoginResponse:
        pair = await self.hub.auth.login(request.username, request.password, _client_host(context))
        return pb.LoginResponse(success=True, message="logged in", token=pair.access_token, **_renewal(pair))

    @_adapter
    async def Transfer(
        self, request: pb.TransferRequest, context: grpc.aio.ServicerContext
    ) -> pb.TransferResponse:
        principal = self.principal(request.token, context)
        if not request.receiver_username:
            raise InvalidInput("receiver_username is required", field="receiver_username")
        key = request.idempotency_key or f"grpc-{uuid.uuid4().hex}"
        result = await self.hub.ledger.transfer(principal, request.receiver_username, request.amount, key)
        record = result.record
        return pb.TransferResponse(
            success=True,
            message=f"transferred {record.amount_micro} to {record.destination}",
            transfer_id=record.id,
            replayed=result.replayed,
        )

    @_adapter
    async def GetBalance(
        self, request: pb.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetBalanceResponse:
        principal = self.principal(request.token, context)
        account = principal.account
        if request.username and request.username != principal.username:
            if not principal.is_admin:
                raise Forbidden("a token reads its own user's balance only")
            account = self.hub.ledger.resolve_account(request.username)
        balance = await self.hub.ledger.balance(account)
        return pb.GetBalanceResponse(
            success=True, message=account, balance=balance.available, held=balance.held
        )

    @_adapter
    async def RefreshToken(
        self, request: pb.RefreshTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefreshTokenResponse:
        """A refresh token rotates as over HTTP; HiveMind's clients send their access token instead,
        which is exchanged only while it is still valid (so a leaked one is not made to live forever)."""
        old = request.old_token
        if not old:
            raise TokenInvalid("old_token is required")
        if old.count(".") == 2:  # a JWT: header.claims.signature
            pair = await self.hub.auth.reissue(self.hub.auth.authenticate(old))
        else:
            pair = await self.hub.auth.refresh(old)
        return pb.RefreshTokenResponse(
            success=True, message="token refreshed", new_token=pair.access_token, **_renewal(pair)
        )


# -- nodes --------------------------------------------------------------------------------------------


class NodeManagerService(_Servicer, pb_grpc.NodeManagerServiceServicer):
    @_adapter
    async def RegisterWorkerNode(
        self, request: pb.RegisterWorkerNodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterWorkerNodeResponse:
        """Refused: an unsigned registration proves no key, and gpupool pays a node's owner only for
        what that key signs (SPEC §2). A node registers with ``POST /v1/miners/register``."""
        raise Unauthenticated(
            "RegisterWorkerNode carries no signature; register the node with a signed event "
            "(POST /v1/miners/register, kind 21000) and use its session token here",
            code="signature_required",
        )

    @_adapter
    async def ReportStatus(
        self, request: pb.ReportStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportStatusResponse:
        """A heartbeat: keeps the node's session and lease alive, with its running task count."""
        if not request.session_token:
            raise Unauthenticated("session_token is required", code="session_invalid")
        if request.running_tasks < 0:
            raise InvalidInput("running_tasks must be >= 0", field="running_tasks")
        await self.hub.sessions.beat(
            request.session_token, request.running_tasks, None, request.node_id or None
        )
        return pb.ReportStatusResponse(success=True, message="status recorded")


# -- tasks, user side ---------------------------------------------------------------------------------


def hub_task_id(owner: str, client_task_id: str) -> str:
    """The hub's id for a task a client named: per owner, so two users' ids never meet, and
    deterministic, so a retried upload meets its first attempt instead of holding escrow twice."""
    return hashlib.sha256(f"{owner}\0{client_task_id}".encode()).hexdigest()[:32]


class MasterNodeService(_Servicer, pb_grpc.MasterNodeServiceServicer):
    @_adapter
    async def UploadTask(
        self, request: pb.UploadTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.UploadTaskResponse:
        principal = self.principal(request.token, context)
        client_id = request.task_id or uuid.uuid4().hex
        if len(client_id) > CLIENT_TASK_ID_MAX or not client_id.isprintable():
            raise InvalidInput(
                f"task_id must be 1-{CLIENT_TASK_ID_MAX} printable characters", field="task_id"
            )
        files = self.hub.tasks.files
        staged: Path | None = None
        names: list[str] = []
        try:
            if request.task_zip:
                staged = files.root / "staging" / uuid.uuid4().hex
                names = await asyncio.to_thread(files.bundle_from_zip, request.task_zip, staged)
            new = _new_task(request, client_id, names, self.hub.settings.grpc_default_price_micro_per_ksec)
            row = await self.hub.tasks.submit(
                principal, new, staged, task_id=hub_task_id(principal.username, client_id)
            )
        finally:
            if staged is not None:
                staged.unlink(missing_ok=True)
        return pb.UploadTaskResponse(
            success=True,
            message="task queued",
            task_id=client_id,
            status=row.view.state.value,
            hold=row.hold_micro,
        )

    @_adapter
    async def GetTaskResult(
        self, request: pb.GetTaskResultRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTaskResultResponse:
        _, row = await self._task(request.task_id, request.token, context)
        view = row.view
        if not view.is_terminal:
            return pb.GetTaskResultResponse(
                success=False, message=f"task is {view.state.value}; no result yet", status=view.state.value
            )
        artifacts = row.artifacts or []
        limit = self.hub.settings.max_bundle_bytes
        if sum(int(a.get("size", 0)) for a in artifacts) > limit:
            raise PayloadTooLarge(
                f"the results are over {limit} bytes; download them over HTTP "
                f"(GET /v1/tasks/{view.task_id}/artifacts/...)",
                details={"limit": limit},
            )
        result = await asyncio.to_thread(self.hub.tasks.files.artifacts_zip, view.task_id, artifacts)
        answer = pb.GetTaskResultResponse(
            success=view.state is TaskState.SUCCEEDED,
            message=f"task {view.state.value}",
            result_zip=result,
            status=view.state.value,
        )
        if view.exit_code is not None:
            answer.exit_code = view.exit_code
        return answer

    @_adapter
    async def GetAllUserTasks(
        self, request: pb.GetAllUserTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetAllUserTasksResponse:
        principal = self.principal(request.token, context)
        answer = pb.GetAllUserTasksResponse()
        before: tuple[float, str] | tuple[None, None] = (None, None)
        while True:  # newest first, a page at a time: every task, without one unbounded query
            rows = await self.hub.tasks.page(principal, ALL_TASKS_PAGE, before[0], before_id=before[1])
            answer.tasks.extend(self._status(row) for row in rows)
            if len(rows) < ALL_TASKS_PAGE:
                return answer
            before = (rows[-1].view.submitted_at, rows[-1].view.task_id)

    @_adapter
    async def StopTask(
        self, request: pb.StopTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopTaskResponse:
        principal, row = await self._task(request.task_id, request.token, context)
        view = await self.hub.tasks.stop(principal, row.view.task_id)
        message = "stopped" if view.is_terminal else "stop sent to the node"
        return pb.StopTaskResponse(success=True, message=message, status=view.state.value)

    @_adapter
    async def GetTasklog(
        self, request: pb.GetTasklogRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTasklogResponse:
        _, row = await self._task(request.task_id, request.token, context)
        parts: list[str] = []
        cursor = 0
        while chunk := await self.hub.tasks.output(row.view.task_id, cursor):
            parts.extend(r.data for r in chunk)
            cursor = chunk[-1].seq + 1
        return pb.GetTasklogResponse(success=True, log="".join(parts))

    async def _task(
        self, task_id: str, token: str, context: grpc.aio.ServicerContext
    ) -> tuple[Principal, TaskRow]:
        """The caller's task by the id they uploaded it with, or by the hub's own id."""
        principal = self.principal(token, context)
        if not task_id:
            raise InvalidInput("task_id is required", field="task_id")
        try:
            return principal, await self.hub.tasks.get(principal, hub_task_id(principal.username, task_id))
        except NotFound:
            if not task_id.isalnum():
                raise
            return principal, await self.hub.tasks.get(principal, task_id)

    def _status(self, row: TaskRow) -> pb.TaskStatus:
        view, usage = row.view, row.usage or {}
        duration = float(usage.get("duration_sec") or 0)
        cpu_seconds = float(usage.get("cpu_seconds") or 0)
        node = self.hub.live.nodes.get(view.assigned_node or "")
        return pb.TaskStatus(
            # An uploaded task is shown by the id its client chose (kept as its name).
            task_id=row.name if hub_task_id(row.owner, row.name) == view.task_id else view.task_id,
            status=view.state.value,
            message=view.outcome.value if view.outcome else "",
            cpu_usage=100.0 * cpu_seconds / duration if duration > 0 else 0.0,
            memory_usage=float(usage.get("ram_peak_mb") or 0),
            gpu_usage=float(usage.get("gpu_util_avg") or 0),
            gpu_memory_usage=float(usage.get("vram_peak_mb") or 0),
            worker_ip=_host_of(str(node.record.spec.get("addr") or "")) if node else "",
            cost=row.charge_micro or 0,
        )


def _host_of(addr: str) -> str:
    """``http://10.0.0.7:8080`` or ``10.0.0.7:8080`` → ``10.0.0.7``: HiveMind shows a worker's IP."""
    return urlsplit(addr if "://" in addr else f"//{addr}").hostname or ""


def _new_task(request: pb.UploadTaskRequest, client_id: str, names: list[str], default_price: int) -> NewTask:
    """The upload as the HTTP API's ``TaskIn``, checked by the same rules; HiveMind's zero means unset."""
    command = list(request.command)
    if not command:
        found = [argv for name, argv in DEFAULT_ENTRYPOINTS if name in names]
        if not found:
            raise InvalidInput(
                "give a command, or put run.sh or main.py at the top of task_zip", field="command"
            )
        command = found[0]
    requirements: dict[str, Any] = {
        "min_ram_gb": request.memory_gb or None,
        "min_vram_gb": request.gpu_memory_gb or None,
        "gpu_count": request.gpu_count or None,
        "accel": [request.gpu_name] if request.gpu_name else [],
        "region": request.location or None,
    }
    body = {
        "name": client_id,
        "command": command,
        "env": dict(request.env),
        "requirements": requirements,
        "max_price_token_per_ksec": request.max_price_token_per_ksec or default_price,
        "timeout_sec": request.timeout_sec or 3600.0,
        "max_attempts": request.max_attempts or 3,
    }
    try:
        return TaskIn.model_validate(body).to_new_task()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise InvalidInput(f"{field}: {first['msg']}", field=field) from exc


# -- tasks, node side ---------------------------------------------------------------------------------

_WORKER_SIDE = (
    "{} is served by worker nodes in HiveMind; the gpupool hub pushes tasks to its nodes over their "
    "heartbeat socket (SPEC §3.2)"
)


class WorkerNodeService(_Servicer, pb_grpc.WorkerNodeServiceServicer):
    async def ExecuteTask(self, request: Any, context: grpc.aio.ServicerContext) -> pb.WorkerResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _WORKER_SIDE.format("ExecuteTask"))
        raise AssertionError("unreachable: abort raises")

    async def TaskOutput(self, request: Any, context: grpc.aio.ServicerContext) -> pb.WorkerResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _WORKER_SIDE.format("TaskOutput"))
        raise AssertionError("unreachable: abort raises")

    async def StopTaskExecution(self, request: Any, context: grpc.aio.ServicerContext) -> pb.WorkerResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _WORKER_SIDE.format("StopTaskExecution"))
        raise AssertionError("unreachable: abort raises")

    @_adapter
    async def TaskOutputUpload(
        self, request: pb.TaskOutputUploadRequest, context: grpc.aio.ServicerContext
    ) -> pb.WorkerResponse:
        miner_id = await self._node(request.token)
        seq = request.seq if request.HasField("seq") else 0
        body = {"seq": seq, "stream": request.stream or "stdout", "data": request.output}
        chunk = wire.decode(wire.OutputChunk, body)
        if not request.HasField("seq"):
            seq = await self.hub.tasks.node_output_appended(
                miner_id, request.task_id, chunk.stream, chunk.data
            )
            return pb.WorkerResponse(success=True, message=f"seq {seq} stored")
        stored = await self.hub.tasks.node_output(
            miner_id, request.task_id, chunk.seq, chunk.stream, chunk.data
        )
        return pb.WorkerResponse(
            success=True, message=f"seq {request.seq} {'stored' if stored else 'seen already'}"
        )

    @_adapter
    async def TaskResultUpload(
        self, request: pb.TaskResultUploadRequest, context: grpc.aio.ServicerContext
    ) -> pb.WorkerResponse:
        """Keeps ``result_zip`` as the artifact ``result.zip``; settles the task when ``signed_result``
        (kind 21002, the body ``POST /v1/tasks/{id}/result`` takes) comes with it, as over HTTP."""
        miner_id = await self._node(request.token)
        if not request.result_zip and not request.signed_result:
            raise InvalidInput("send result_zip, signed_result or both", field="signed_result")
        files = self.hub.tasks.files
        message = []
        if request.result_zip:
            self.hub.tasks.assigned_to(request.task_id, miner_id)
            if len(request.result_zip) > files.max_bytes:
                raise PayloadTooLarge(
                    f"result_zip over {files.max_bytes} bytes", details={"limit": files.max_bytes}
                )
            target = files.artifact(request.task_id, RESULT_ARTIFACT)

            async def one() -> Any:
                yield request.result_zip

            size, digest = await files.save(target, one())
            message.append(f"{RESULT_ARTIFACT}: {size} bytes, sha256 {digest}")
        if request.signed_result:
            try:
                raw = json.loads(request.signed_result)
            except ValueError as exc:
                raise InvalidInput("signed_result is not JSON", field="signed_result") from exc
            if not isinstance(raw, dict) or raw.get("task_id") != request.task_id:
                raise InvalidInput("signed_result's task_id must be the request's", field="task_id")
            row = await self.hub.tasks.node_result(miner_id, raw)
            message.append(f"task {row.view.state.value}")
        return pb.WorkerResponse(success=True, message="; ".join(message))

    @_adapter
    async def TaskUsage(
        self, request: pb.TaskUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.WorkerResponse:
        """Refused: what a node bills must be signed by its key, so usage travels in the signed result."""
        await self._node(request.token)
        raise InvalidInput(
            "usage is billed from the signed result only: send it in TaskResultUpload.signed_result "
            "(kind 21002)",
            field="usage",
            code="signature_required",
        )

    async def _node(self, token: str) -> str:
        if not token:
            raise Unauthenticated("token (the node's session token) is required", code="session_invalid")
        return await self.hub.sessions.resolve(token)


_ADDERS: tuple[tuple[Callable[[Any, grpc.aio.Server], None], type[_Servicer]], ...] = (
    (pb_grpc.add_UserServiceServicer_to_server, UserService),
    (pb_grpc.add_NodeManagerServiceServicer_to_server, NodeManagerService),
    (pb_grpc.add_MasterNodeServiceServicer_to_server, MasterNodeService),
    (pb_grpc.add_WorkerNodeServiceServicer_to_server, WorkerNodeService),
)


def add_services(server: grpc.aio.Server, hub: Hub) -> list[str]:
    """Register the four services on ``server``; their full names, for reflection."""
    for add, servicer in _ADDERS:
        add(servicer(hub), server)
    return [service.full_name for service in pb.DESCRIPTOR.services_by_name.values()]
