"""The node's PoW API on its 8080 app: Gonka's MLNode API (SPEC §5, §8.3), thin over ``PowService``.

Routes and shapes are the ML node's (``/api/v1/pow/init``, ``/init/generate``, ``/init/validate``,
``/phase/generate``, ``/phase/validate``, ``/validate``, ``/status``, ``/stop``, and ``/api/v1/state``,
``/api/v1/stop``), driven as Gonka's decentralized-api drives them. For the node's own key it signs and
submits to its hub; for another key (``GPUPOOL_NODE_MLNODE_API=true`` only) it proves for that key and
posts to the caller's ``url``, and then answers only callers inside ``GPUPOOL_NODE_MLNODE_ALLOW_CIDRS``.
Without a callback ``url`` (or with the MLNode API off), ``/validate`` answers its verdict at once,
with this node's key seeding the sample. In delegation mode validation is refused (SPEC §5).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gpupool import crypto
from gpupool.core.poc_batch import Batch
from gpupool.error_status import error_body, status_for
from gpupool.errors import Conflict, Forbidden, GpupoolError, InvalidInput
from gpupool.pow.rounds import PowRound
from gpupool.pow.service import PowService
from gpupool.pow.validation import MAX_VALIDATE_NONCES

API = "/api/v1"
PREFIX = f"{API}/pow"
VALIDATION_REFUSED = "Validation phase not supported in delegation mode"
NODE_IDS_UNSET = "Node ID and node count must be set"
DEFAULT_ALLOW_CIDRS = ("127.0.0.0/8", "::1/128")
GONKA_400 = {"pow_not_running", "node_not_set"}  # the ML node answers these with 400 and a detail

Handler = Callable[[Request], Awaitable[JSONResponse]]


def _error(exc: GpupoolError) -> JSONResponse:
    body = {"detail": exc.message, **error_body(exc.code, exc.message, exc.details)}
    return JSONResponse(body, status_code=400 if exc.code in GONKA_400 else status_for(exc))


async def _json(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to parse
        raise InvalidInput("the body must be a JSON object", field="body") from exc
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    return data


def parse_init(service: PowService, data: dict[str, Any]) -> tuple[PowRound, str | None, bool]:
    """Gonka's ``PowInitRequestUrl``: the round, its ``url``, and whether node_id/node_count were set.

    Gonka leaves node_id and node_count at -1 when unset (``init/generate`` refuses that with 400, and
    ``phase/generate`` needs them from ``init``); its own client omits ``public_key`` for
    ``init`` and ``init/validate`` (the batches to validate carry theirs); then this node's key stands in.
    """
    node_id, node_count = data.get("node_id"), data.get("node_count")
    given = node_id not in (None, -1) and node_count not in (None, -1)
    fields = dict(data) if given else {**data, "node_id": 0, "node_count": 1}
    if not fields.get("public_key"):
        fields["public_key"] = service.key.pubkey
    url = data.get("url")
    return PowRound.from_json(fields), url if isinstance(url, str) and url else None, given


class Guard:
    """With the MLNode API on, only callers inside the allowed networks reach the PoW API."""

    def __init__(self, enabled: bool, cidrs: Sequence[str]) -> None:
        self.enabled = enabled
        self.networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]

    def check(self, request: Request) -> None:
        if not self.enabled:
            return
        host = request.client.host if request.client else ""
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            raise Forbidden("caller address unknown", code="caller_not_allowed") from None
        if not any(addr in net for net in self.networks):
            raise Forbidden("this caller may not drive the node's PoW API", code="caller_not_allowed")


def pow_routes(service: PowService, allow_cidrs: Sequence[str] = DEFAULT_ALLOW_CIDRS) -> list[Route]:
    """Routes to mount on the node's health app; ``service`` holds the state."""
    api = MlnodeApi(service, Guard(service.serve_foreign, allow_cidrs))
    table: list[tuple[str, Handler, str]] = [
        (f"{PREFIX}/init", api.init, "POST"),
        (f"{PREFIX}/init/generate", api.init_generate, "POST"),
        (f"{PREFIX}/init/validate", api.init_validate, "POST"),
        (f"{PREFIX}/phase/generate", api.phase_generate, "POST"),
        (f"{PREFIX}/phase/validate", api.phase_validate, "POST"),
        (f"{PREFIX}/validate", api.validate, "POST"),
        (f"{PREFIX}/status", api.status, "GET"),
        (f"{PREFIX}/stop", api.stop, "POST"),
        (f"{API}/state", api.state, "GET"),
        (f"{API}/stop", api.stop_all, "POST"),
    ]
    return [Route(path, api.guarded(handler), methods=[method]) for path, handler, method in table]


class MlnodeApi:
    """One handler per route: parse, call the service, answer in the ML node's shapes."""

    def __init__(self, service: PowService, guard: Guard) -> None:
        self.service, self.guard = service, guard

    def guarded(self, handler: Handler) -> Handler:
        async def wrapped(request: Request) -> JSONResponse:
            try:
                self.guard.check(request)
                return await handler(request)
            except GpupoolError as exc:
                return _error(exc)

        return wrapped

    def ok(self) -> JSONResponse:
        return JSONResponse({"status": "OK", "pow_status": self.service.status()})

    def refuse_in_delegation(self) -> None:
        if self.service.delegation_mode:
            raise Conflict(VALIDATION_REFUSED, code="delegation_mode")

    async def init(self, request: Request) -> JSONResponse:
        pow_round, url, given = parse_init(self.service, await _json(request))
        await self.service.init(pow_round, url, given)
        return self.ok()

    async def init_generate(self, request: Request) -> JSONResponse:
        data = await _json(request)
        if -1 in (data.get("node_id"), data.get("node_count")):
            raise Conflict(NODE_IDS_UNSET, code="node_not_set")
        pow_round, url, _given = parse_init(self.service, data)  # absent: node 0 of 1, as before Gonka's wire
        await self.service.start(pow_round, url)
        return self.ok()

    async def init_validate(self, request: Request) -> JSONResponse:
        self.refuse_in_delegation()
        pow_round, url, _given = parse_init(self.service, await _json(request))
        await self.service.phase_validate(pow_round, url if self.service.serve_foreign else None)
        body = {"block_hash": pow_round.block_hash, "block_height": pow_round.block_height}
        return JSONResponse({"status": "OK", "pow_status": self.service.status(), **body})

    async def phase_generate(self, _request: Request) -> JSONResponse:
        await self.service.phase_generate()
        return self.ok()

    async def phase_validate(self, _request: Request) -> JSONResponse:
        self.refuse_in_delegation()
        await self.service.phase_validate()
        return self.ok()

    async def validate(self, request: Request) -> JSONResponse:
        self.refuse_in_delegation()
        data = await _json(request)
        batch = Batch.from_dict(data)
        crypto.poc_public_key(batch.public_key, field="public_key")
        if len(batch) > MAX_VALIDATE_NONCES:
            raise InvalidInput(f"at most {MAX_VALIDATE_NONCES} nonces per batch to validate", field="nonces")
        validator = self.service.validator
        if validator is None:
            known = self.service.init_request[0] if self.service.init_request else None
            return JSONResponse(await _validate_now(self.service, known, batch, data))
        if batch.block_hash != validator.vround.block_hash:
            raise Conflict("call /api/v1/pow/init/validate for this block_hash first", code="no_round")
        validator.submit(batch)
        return JSONResponse({"status": "OK"})

    async def status(self, _request: Request) -> JSONResponse:
        return JSONResponse(self.service.status())

    async def stop(self, _request: Request) -> JSONResponse:
        service = self.service
        if not service.running and service.state not in ("LOADING", "GENERATING", "VALIDATING"):
            return JSONResponse({"status": "OK", "pow_status": "PoW is not running"})
        await service.stop()
        return self.ok()

    async def state(self, _request: Request) -> JSONResponse:
        return JSONResponse({"state": "POW" if self.service.running else "STOPPED"})

    async def stop_all(self, _request: Request) -> JSONResponse:
        await self.service.stop()
        return JSONResponse({"status": "OK"})


async def _validate_now(
    service: PowService, known: PowRound | None, batch: Batch, data: dict[str, Any]
) -> dict[str, Any]:
    """Our own verdict at once, against the round set by ``init/validate`` (or the body's ``params``)."""
    if "params" in data or known is None or known.block_hash != batch.block_hash:
        if "params" not in data:
            raise Conflict("call /api/v1/pow/init/validate for this block_hash first", code="no_round")
        known = PowRound.from_json({**data, "public_key": service.key.pubkey})
    try:
        r_target = float(data.get("r_target", known.r_target))
        fraud_threshold = float(data.get("fraud_threshold", known.fraud_threshold))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"malformed request: {exc}", field="body") from exc
    from gpupool.core.poc import PocModel, validate_batch  # NumPy only once a validation is asked for

    model = await asyncio.to_thread(PocModel.build, batch.block_hash, known.params)
    result = await asyncio.to_thread(
        validate_batch,
        batch,
        lambda key, nonces: model.distances(key, nonces),
        service.key.pubkey,
        r_target,
        fraud_threshold,
    )
    return {
        "public_key": batch.public_key,
        "block_hash": batch.block_hash,
        "block_height": batch.block_height,
        "node_id": batch.node_id,
        "validator": service.key.pubkey,
        "n_sampled": result.n_sampled,
        "n_invalid": result.n_invalid,
        "p_value": result.p_value,
        "fraud_detected": result.fraud,
        "weight": result.weight,
        "r_target": r_target,
        "fraud_threshold": fraud_threshold,
    }
