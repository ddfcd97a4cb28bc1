"""Tasks (SPEC §3.4): users submit, watch (Server-Sent Events, resumable), stop; nodes report."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import UploadFile

from gpupool.api.deps import ClientDep, HubDep, PrincipalDep
from gpupool.api.errors import error_body
from gpupool.api.schemas_tasks import (
    BatchItemOut,
    OutputAck,
    OutputIn,
    ResultOut,
    SubmittedOut,
    TaskBatchIn,
    TaskBatchOut,
    TaskIn,
    TaskOut,
)
from gpupool.bounds import MAX_JSON_DEPTH, MAX_JSON_INT, MAX_TASK_SPEC_BYTES, MAX_TIMESTAMP, json_depth
from gpupool.core.scheduling import TaskState
from gpupool.core.units import tokens_from_micro
from gpupool.errors import GpupoolError, InvalidInput, NotFound, PayloadTooLarge
from gpupool.hub.container import Hub
from gpupool.hub.waiting import WaitingReasons
from gpupool.store.tasks_repo import TaskRow

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
SessionHeader = Annotated[str, Header(alias="X-Session-Token", min_length=1, max_length=128)]


def task_out(row: TaskRow, reasons: WaitingReasons | None = None) -> TaskOut:
    v = row.view
    return TaskOut(
        task_id=v.task_id,
        name=row.name,
        status=v.state.value,
        owner=row.owner,
        miner_id=v.assigned_node,
        attempts=v.attempts,
        max_attempts=v.max_attempts,
        submitted_at=v.submitted_at,
        started_at=v.started_at,
        finished_at=v.finished_at,
        exit_code=v.exit_code,
        outcome=v.outcome.value if v.outcome else None,
        hold=row.hold_micro,
        price_token_per_ksec=None
        if row.price_micro_per_ksec is None
        else tokens_from_micro(row.price_micro_per_ksec),
        price_micro_per_ksec=row.price_micro_per_ksec,
        cost=row.charge_micro,
        usage=row.usage,
        waiting_reason=reasons.of(row) if reasons is not None else None,
    )


@router.post(
    "",
    response_model=SubmittedOut,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/TaskIn"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "string"},
                            "bundle": {"type": "string", "format": "binary"},
                        },
                    }
                },
            }
        }
    },
)
async def submit(request: Request, hub: HubDep, principal: PrincipalDep) -> SubmittedOut:
    """JSON ``TaskIn``, or multipart with ``spec`` (that JSON) and ``bundle`` (a .tar.gz of the task's files).

    Holds price cap x timeout (x GPUs) in escrow; 402 when the balance does not cover it.
    """
    staged: Path | None = None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=4) as form:
            body = _task_in(form.get("spec"))
            upload = form.get("bundle")
            if isinstance(upload, UploadFile):
                staged = hub.tasks.files.root / "staging" / uuid.uuid4().hex
                await hub.tasks.files.save(staged, _chunks(upload))
    else:
        body = _task_in(await request.body())
    try:
        if staged is not None:  # a bomb is refused here, by what its members declare
            await asyncio.to_thread(hub.tasks.files.check_bundle, staged)
        row = await hub.tasks.submit(principal, body.to_new_task(), staged)
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)
    return SubmittedOut(task_id=row.view.task_id, status=row.view.state.value, hold=row.hold_micro)


@router.post("/batch", response_model=TaskBatchOut)
async def submit_batch(body: TaskBatchIn, hub: HubDep, principal: PrincipalDep) -> TaskBatchOut:
    """Up to 1,000 tasks (no bundles) in one request, each held and queued or refused on its own (in
    order: when the balance runs out, the later ones get 402); a parameter sweep in one round trip."""
    answers = await hub.tasks.submit_many(principal, [t.to_new_task() for t in body.tasks])
    items = []
    for answer in answers:
        if isinstance(answer, GpupoolError):
            items.append(BatchItemOut(error=error_body(answer.code, str(answer), answer.details)["error"]))
        elif isinstance(answer, BaseException):
            raise answer
        else:
            items.append(
                BatchItemOut(
                    task_id=answer.view.task_id, status=answer.view.state.value, hold=answer.hold_micro
                )
            )
    return TaskBatchOut(tasks=items)


TaskInAdapter = TypeAdapter(TaskIn)


def _task_in(raw: object) -> TaskIn:
    if not isinstance(raw, str | bytes):
        raise InvalidInput("the multipart field 'spec' must hold the task as JSON", field="spec")
    if len(raw) > MAX_TASK_SPEC_BYTES:  # the bundle may be large; the spec the hub keeps in memory not
        raise PayloadTooLarge(
            f"a task spec is at most {MAX_TASK_SPEC_BYTES} bytes of JSON", details={"field": "spec"}
        )
    try:
        return TaskInAdapter.validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from exc


def _signed_json(body: bytes) -> object:
    """A node's signed body, refused (422) when it is not JSON or nests deeper than any result does."""
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput("the body must be a signed result as JSON", field="body") from exc
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise InvalidInput(f"the body nests deeper than {MAX_JSON_DEPTH} levels", field="body")
    return raw


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(1 << 20):
        yield chunk


async def _request_chunks(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        yield chunk


@router.get("", response_model=list[TaskOut])
async def list_tasks(
    hub: HubDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[
        float | None,
        Query(ge=0, le=MAX_TIMESTAMP, allow_inf_nan=False, description="submitted_at of the last task seen"),
    ] = None,
    before_id: Annotated[
        str | None, Query(max_length=64, description="task_id of the last task seen (with before: exact)")
    ] = None,
    status: Annotated[list[TaskState] | None, Query(description="only tasks in these states")] = None,
) -> list[TaskOut]:
    rows = await hub.tasks.page(principal, limit, before, status or [], before_id)
    reasons = WaitingReasons(hub.live)
    return [task_out(r, reasons) for r in rows]


@router.get("/{task_id}", response_model=TaskOut)
async def get_task(task_id: str, hub: HubDep, principal: PrincipalDep) -> TaskOut:
    return task_out(await hub.tasks.get(principal, task_id), WaitingReasons(hub.live))


@router.get("/{task_id}/result", response_model=ResultOut)
async def result(task_id: str, hub: HubDep, principal: PrincipalDep) -> ResultOut:
    row = await hub.tasks.get(principal, task_id)
    return ResultOut(
        task_id=task_id,
        status=row.view.state.value,
        exit_code=row.view.exit_code,
        artifacts=row.artifacts or [],
    )


@router.post("/{task_id}/stop", response_model=TaskOut)
async def stop(task_id: str, hub: HubDep, principal: PrincipalDep) -> TaskOut:
    """A queued task stops at once; a running one is ``stopping`` until its node reports it ended."""
    await hub.tasks.stop(principal, task_id)
    out = task_out(await hub.tasks.get(principal, task_id))
    if out.status in (TaskState.ASSIGNED, TaskState.RUNNING):
        out.status = "stopping"
    return out


class EventStream(StreamingResponse):
    media_type = "text/event-stream"


@router.get(
    "/{task_id}/output",
    response_class=EventStream,
    responses={200: {"description": "Server-Sent Events", "content": {"text/event-stream": {}}}},
)
async def output(
    task_id: str,
    request: Request,
    hub: HubDep,
    principal: PrincipalDep,
    from_: Annotated[int, Query(alias="from", ge=0, le=MAX_JSON_INT)] = 0,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventStream:
    """Server-Sent Events: one event per chunk (``id`` = seq), then ``end`` when the task is over.

    A client that reconnects with ``Last-Event-ID`` (or ``?from=``) gets the rest, without gaps or
    repeats.
    """
    await hub.tasks.get(principal, task_id)  # 404 for someone else's task
    resumed = last_event_id is not None and last_event_id.isdigit() and int(last_event_id) < MAX_JSON_INT
    start = int(last_event_id) + 1 if resumed and last_event_id else from_
    return EventStream(_events(hub, request, task_id, start))


async def _events(hub: Hub, request: Request, task_id: str, cursor: int) -> AsyncIterator[str]:
    while not await request.is_disconnected():
        rows = await hub.tasks.output(task_id, cursor)
        for r in rows:
            yield f"id: {r.seq}\nevent: {r.stream}\ndata: {json.dumps(r.data)}\n\n"
            cursor = r.seq + 1
        if rows:
            continue
        if task_id not in hub.tasks.views:  # finished: everything stored has been sent
            final = await hub.tasks.output(task_id, cursor)
            if not final:
                yield "event: end\ndata: {}\n\n"
                return
            continue
        async with hub.tasks.output_event:
            try:
                await asyncio.wait_for(hub.tasks.output_event.wait(), 1.0)
            except TimeoutError:
                yield ": keep-alive\n\n"


@router.get("/{task_id}/artifacts/{path:path}")
async def download_artifact(task_id: str, path: str, hub: HubDep, principal: PrincipalDep) -> FileResponse:
    row = await hub.tasks.get(principal, task_id)
    if not any(a["path"] == path for a in row.artifacts or []):
        raise NotFound(f"task {task_id} has no artifact {path}")
    return FileResponse(hub.tasks.files.artifact(task_id, path), filename=Path(path).name)


# -- node side ------------------------------------------------------------------------------------


@router.post("/{task_id}/output", response_model=OutputAck)
async def node_output(
    task_id: str, body: OutputIn, hub: HubDep, session_token: SessionHeader, client: ClientDep
) -> OutputAck:
    """Idempotent by ``seq``: a chunk re-sent after a reconnect is acknowledged and not stored twice."""
    miner_id = await hub.sessions.resolve(session_token, client=client)
    stored = await hub.tasks.node_output(miner_id, task_id, body.seq, body.stream, body.data)
    return OutputAck(task_id=task_id, seq=body.seq, stored=stored)


@router.post("/{task_id}/result", response_model=TaskOut)
async def node_result(
    task_id: str, request: Request, hub: HubDep, session_token: SessionHeader, client: ClientDep
) -> TaskOut:
    """Signed (kind 21002) by the node: exit code, status, usage, artifact digests; settles the task."""
    miner_id = await hub.sessions.resolve(session_token, client=client)
    raw = _signed_json(await request.body())
    if not isinstance(raw, dict) or raw.get("task_id") != task_id:
        raise InvalidInput("the body's task_id must be the task in the path", field="task_id")
    return task_out(await hub.tasks.node_result(miner_id, raw))


@router.get("/{task_id}/bundle")
async def node_bundle(
    task_id: str, hub: HubDep, session_token: SessionHeader, client: ClientDep
) -> FileResponse:
    """The task's files, for the node it is assigned to only."""
    miner_id = await hub.sessions.resolve(session_token, client=client)
    await hub.tasks.node_fetched_bundle(miner_id, task_id)
    return FileResponse(hub.tasks.files.bundle(task_id), media_type="application/gzip")


@router.put("/{task_id}/artifacts/{path:path}", status_code=status.HTTP_201_CREATED)
async def node_artifact(
    task_id: str,
    path: str,
    request: Request,
    hub: HubDep,
    session_token: SessionHeader,
    client: ClientDep,
    sha256: Annotated[str, Header(alias="X-Content-SHA256", pattern="^[0-9a-f]{64}$")],
) -> dict[str, object]:
    """One file the task wrote under ``output/``; kept only when its sha256 is the one announced."""
    miner_id = await hub.sessions.resolve(session_token, client=client)
    hub.tasks.assigned_to(task_id, miner_id)
    target = hub.tasks.files.artifact(task_id, path)
    size, digest = await hub.tasks.files.save(target, _request_chunks(request))
    if digest != sha256:
        target.unlink(missing_ok=True)
        raise InvalidInput("the uploaded bytes do not have the announced sha256", field="X-Content-SHA256")
    return {"path": path, "size": size, "sha256": digest}
