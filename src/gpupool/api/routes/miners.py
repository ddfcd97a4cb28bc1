"""Node lifecycle (SPEC §3.2): register, update, renew, heartbeat over WebSocket, logout, listing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, WebSocket, WebSocketDisconnect, status
from pydantic import ValidationError

from gpupool import wire
from gpupool.api.deps import AdminDep, ClientDep, HubDep, PrincipalDep, RateLimitDep
from gpupool.api.dialects import aitbc, parsed
from gpupool.api.errors import status_for, ws_close_code
from gpupool.api.schemas_registry import (
    GpuOut,
    HeartbeatIn,
    LeaseOut,
    MinerOut,
    MinerPage,
    RegisterIn,
    RegisterOut,
    SessionIn,
    UpdateIn,
)
from gpupool.bounds import MAX_JSON_DEPTH, MAX_PAGE, MAX_WS_FRAME_BYTES, json_depth
from gpupool.core.units import tokens_from_micro
from gpupool.errors import GpupoolError, InvalidInput
from gpupool.hub.channels import Sender
from gpupool.hub.container import Hub
from gpupool.hub.live import GpuSpec, NodeSpec
from gpupool.store.registry_repo import MinerRecord
from gpupool.store.tasks_repo import TaskRow
from gpupool.wire import BATCH_SUBPROTOCOL, envelope, opened

router = APIRouter(prefix="/v1/miners", tags=["miners"])
log = logging.getLogger(__name__)


def miner_out(record: MinerRecord) -> MinerOut:
    spec = NodeSpec.from_record(record)
    return MinerOut(
        miner_id=record.miner_id,
        pubkey=record.pubkey,
        owner=record.owner,
        identity=record.identity,
        status=record.status,
        addr=spec.addr,
        proto=spec.proto,
        region=spec.region,
        gpus=[GpuOut(**_gpu(g)) for g in spec.gpus],
        cpu_cores=spec.cpu_cores,
        ram_gb=spec.ram_gb,
        price_token_per_ksec=tokens_from_micro(spec.price_micro_per_ksec),
        price_micro_per_ksec=spec.price_micro_per_ksec,
        max_parallel=spec.max_parallel,
        tags=list(spec.tags),
        capabilities=list(spec.capabilities),
        trust=record.trust,
        latency_ms=record.latency_ms,
        poc_weight=record.poc_weight,
        registered_at=record.registered_at,
        last_seen=record.last_seen,
        telemetry=record.telemetry,
    )


def _gpu(gpu: GpuSpec) -> dict[str, Any]:
    return {k: getattr(gpu, k) for k in GpuSpec.__slots__}


def _spec(body: RegisterIn) -> NodeSpec:
    return NodeSpec(
        pubkey=body.pubkey,
        owner=body.owner,
        miner_id=body.miner_id,
        cpu_cores=body.cpu_cores,
        ram_gb=float(body.ram_gb),
        price_micro_per_ksec=body.price_micro_per_ksec or 0,
        max_parallel=body.max_parallel,
        gpus=tuple(GpuSpec(**g.model_dump()) for g in body.gpus),
        addr=body.addr,
        proto=body.proto,
        region=body.region,
        tags=tuple(body.tags),
        capabilities=tuple(body.capabilities),
    )


@router.post(
    "/register",
    response_model=None,  # two wires: gpupool's RegisterOut, or AITBC's body (documented there)
    responses={200: {"model": RegisterOut}},
    dependencies=[RateLimitDep],
    openapi_extra={
        "requestBody": {
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RegisterIn"}}}
        }
    },
)
async def register(
    request: Request,
    hub: HubDep,
    api_key: Annotated[str | None, Header(alias="X-Api-Key", max_length=256)] = None,
) -> dict[str, Any]:
    """Signed (kind 21000) by the node's key; the body is verified exactly as sent. An unsigned body
    with an owner ``api_key`` is AITBC's miner (SPEC §8.2): an account-bound node."""
    raw = await json_object(request)
    if "sig_event" not in raw and "api_key" in raw:
        return await aitbc.register(raw, hub)
    body = parsed(RegisterIn, raw)
    registration = await hub.registry.register_miner(raw, _spec(body), api_key)
    if body.running_task_ids is not None:  # a node starting over: what it no longer runs is requeued
        await hub.tasks.reconcile(registration.miner_id, body.running_task_ids)
    return RegisterOut(**{k: getattr(registration, k) for k in RegisterOut.model_fields}).model_dump()


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object."""
    try:
        raw = await request.json()
    except ValueError as exc:
        raise InvalidInput("the body is not JSON", field="body") from exc
    if not isinstance(raw, dict):
        raise InvalidInput("the body is a JSON object", field="body")
    return raw


@router.post("/update", response_model=LeaseOut, dependencies=[RateLimitDep])
async def update(body: UpdateIn, hub: HubDep, client: ClientDep) -> LeaseOut:
    miner_id = await hub.sessions.beat(body.session_token, body.queue_len, None, body.miner_id, client)
    if body.price_micro_per_ksec is not None:
        await hub.registry.set_price(miner_id, body.price_micro_per_ksec)
    return await _lease(hub, body.session_token)


@router.get("/lease/renew", response_model=LeaseOut, dependencies=[RateLimitDep])
async def renew(
    hub: HubDep, client: ClientDep, session_token: Annotated[str, Query(min_length=1, max_length=128)]
) -> LeaseOut:
    """The HTTP fallback of the heartbeat socket: keeps the session and the node alive."""
    await hub.sessions.beat(session_token, _queue_len(hub, session_token), None, client=client)
    return await _lease(hub, session_token)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, dependencies=[RateLimitDep])
async def logout(body: SessionIn, hub: HubDep, client: ClientDep) -> None:
    miner_id = await hub.sessions.logout(body.session_token, client)
    await hub.tasks.lose_nodes([miner_id])


@router.websocket("/heartbeat")
async def heartbeat(websocket: WebSocket, session_token: str = "") -> None:
    """Heartbeats in, commands out. A refused session closes with 4401/4403 and the reason code.

    A node that offers the batch subprotocol may send several results in one envelope and gets
    commands and acknowledgements the same way (``gpupool.wire``).
    """
    hub: Hub = websocket.app.state.hub
    batching = BATCH_SUBPROTOCOL in websocket.scope.get("subprotocols", ())
    await websocket.accept(subprotocol=BATCH_SUBPROTOCOL if batching else None)
    client = websocket.client.host if websocket.client else "unknown"
    try:
        miner_id = await hub.sessions.beat(session_token, _queue_len(hub, session_token), None, client=client)
    except GpupoolError as exc:
        await websocket.close(code=ws_close_code(exc), reason=exc.code)
        return
    ack = wire.encode(wire.Ack(next_heartbeat_sec=hub.settings.heartbeat_interval_sec))
    sender = websocket.send_json
    held_before: frozenset[str] | None = hub.tasks.on_node(miner_id)  # until the node lists its tasks
    hub.channels.attach(miner_id, sender, batching=batching)
    hub.tasks.wakeup.set()  # a node that can take work is here: queued tasks need not wait
    reports: set[asyncio.Task[None]] = set()
    try:
        while True:
            try:
                text = await websocket.receive_text()
                if len(text) > MAX_WS_FRAME_BYTES:  # uvicorn's ws_max_size, kept here for any server
                    await websocket.close(code=1009, reason="message_too_big")
                    return
                # A heartbeat is the one message without a type: read from the text in one pass, which
                # costs half of parsing then validating (bench/wire.py); the rest are parsed first, no
                # deeper than MAX_JSON_DEPTH (a heartbeat's own parser stops deep nesting itself).
                message = _frame(text) if '"type"' in text else None
                kind = message.get("type") if isinstance(message, dict) else None
                if kind == "result" or (kind == "batch" and batching):
                    # Signed task results: settled beside the beats, so many batch into one commit.
                    report = asyncio.create_task(
                        _take_results(hub, miner_id, opened(message), sender, batched=kind == "batch")
                    )
                    reports.add(report)
                    report.add_done_callback(reports.discard)
                    continue
                if kind == "batch":
                    raise ValueError(f"a batch needs the {BATCH_SUBPROTOCOL} subprotocol, offered on connect")
                beat = (
                    HeartbeatIn.model_validate_json(text)
                    if message is None
                    else HeartbeatIn.model_validate(message)
                )
            except (ValidationError, ValueError) as exc:
                error = wire.Error(code="invalid_input", message=str(exc)[:500])
                await websocket.send_json(wire.encode(error))
                continue
            try:
                telemetry = beat.model_dump(exclude_none=True, exclude={"running_task_ids"})
                await hub.sessions.beat(session_token, beat.queue_len, telemetry)
            except GpupoolError as exc:
                await websocket.close(code=ws_close_code(exc), reason=exc.code)
                return
            if beat.running_task_ids is not None:  # the first list reconciles, the others show starts
                if held_before is not None:
                    await hub.tasks.reconcile(miner_id, beat.running_task_ids, held_before)
                    held_before = None
                else:
                    await hub.tasks.node_running(miner_id, beat.running_task_ids)
            await websocket.send_json(ack)
    except WebSocketDisconnect:
        log.debug("heartbeat socket of %s closed", miner_id)
    finally:
        hub.channels.detach(miner_id, sender)
        if reports:  # results already received are settled even though their node left
            await asyncio.gather(*reports, return_exceptions=True)


def _frame(text: str) -> Any:
    """One frame's JSON, refused (ValueError) when it nests deeper than any message of the protocol."""
    try:
        message = json.loads(text)
    except RecursionError:
        raise ValueError(f"a message nests deeper than {MAX_JSON_DEPTH} levels") from None
    if json_depth(message) > MAX_JSON_DEPTH:
        raise ValueError(f"a message nests deeper than {MAX_JSON_DEPTH} levels")
    return message


async def _take_results(hub: Hub, miner_id: str, messages: list[Any], send: Sender, *, batched: bool) -> None:
    """``{"type": "result", "result": <signed kind 21002>}`` messages, each answered with a
    ``result_ack`` carrying the status ``POST /v1/tasks/{id}/result`` would have returned; the acks of
    an envelope go back in one."""
    signed = [m.get("result") if isinstance(m, dict) and m.get("type") == "result" else m for m in messages]
    answers: list[TaskRow | BaseException | None]
    try:
        answers = [*await hub.tasks.node_results(miner_id, signed)]
    except Exception:
        log.exception("results from %s failed", miner_id)
        answers = [None] * len(signed)  # None: failed with the rest, logged once above
    acks = [_result_ack(miner_id, raw, answer) for raw, answer in zip(signed, answers, strict=True)]
    with contextlib.suppress(Exception):  # the socket may be gone; the node then asks over HTTP
        if batched:
            await send(envelope(acks))
        else:
            for ack in acks:
                await send(wire.encode(ack))


def _result_ack(miner_id: str, raw: Any, answer: TaskRow | BaseException | None) -> wire.ResultAck:
    task_id = raw.get("task_id") if isinstance(raw, dict) else None
    task_id = task_id if isinstance(task_id, str) and len(task_id) <= 64 else None
    if isinstance(answer, GpupoolError):
        status, code, message = status_for(answer), answer.code[:64], str(answer)[:500]
        return wire.ResultAck(task_id=task_id, status=status, code=code, message=message)
    if answer is None or isinstance(answer, Exception):
        if answer is not None:
            log.error("result of %s from %s failed", task_id, miner_id, exc_info=answer)
        return wire.ResultAck(task_id=task_id, status=500, code="internal_error")
    if isinstance(answer, BaseException):
        raise answer  # cancelled: the hub is stopping
    state = answer.view.state.value
    return wire.ResultAck(task_id=task_id, status=200, state=state, cost=answer.charge_micro)  # type: ignore[arg-type]


@router.get("", response_model=MinerPage)
async def list_miners(
    hub: HubDep,
    _admin: AdminDep,
    status_: Annotated[str | None, Query(alias="status", pattern="^(online|offline|pending)$")] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> MinerPage:
    records, total = await hub.registry.miners(status_, page, page_size)
    return MinerPage(items=[miner_out(r) for r in records], total=total, page=page, page_size=page_size)


@router.get("/{miner_id}", response_model=MinerOut)
async def get_miner(miner_id: str, hub: HubDep, _principal: PrincipalDep) -> MinerOut:
    return miner_out(await hub.registry.miner(miner_id))


async def _lease(hub: Hub, token: str) -> LeaseOut:
    miner_id, expires_at = await hub.sessions.lease(token)
    node = hub.live.nodes.get(miner_id)
    return LeaseOut(
        miner_id=miner_id,
        status="online" if node is not None and node.online else "offline",
        lease_expires_at=expires_at,
        lease_ttl_sec=hub.settings.session_ttl_sec,
        next_heartbeat_sec=hub.settings.heartbeat_interval_sec,
    )


def _queue_len(hub: Hub, token: str) -> int:
    """A renewal without a queue length keeps the one last reported."""
    miner_id = hub.sessions.cached_miner(token)
    node = hub.live.nodes.get(miner_id) if miner_id else None
    return node.queue_len if node is not None else 0
