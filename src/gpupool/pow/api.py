"""The node's PoW API on its 8080 app (SPEC §5, Gonka MLNode names): generate, status, validate, stop.

In delegation mode the node only generates (through the big node) and signs; validation requests are
refused with the reference's message. Otherwise ``/validate`` recomputes a sample of a batch's nonces
with the core validator, as the hub does, with this node's key seeding the sample.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gpupool.core.poc_batch import Batch
from gpupool.errors import Conflict, GpupoolError, InvalidInput
from gpupool.pow.rounds import PowRound
from gpupool.pow.service import PowService

PREFIX = "/api/v1/pow"
VALIDATION_REFUSED = "Validation phase not supported in delegation mode"


def _error(exc: GpupoolError) -> JSONResponse:
    # Imported here: the error table's module pulls in FastAPI, which the node agent otherwise never
    # loads (it serves this API with plain Starlette to stay small).
    from gpupool.api.errors import error_body, status_for

    body = {"detail": exc.message, **error_body(exc.code, exc.message, exc.details)}
    return JSONResponse(body, status_code=status_for(exc))


async def _json(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to parse
        raise InvalidInput("the body must be a JSON object", field="body") from exc
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    return data


def pow_routes(service: PowService) -> list[Route]:
    """Routes to mount on the node's health app; ``service`` holds the state."""
    validation: dict[str, PowRound] = {}

    def refuse_in_delegation() -> None:
        if service.delegation_mode:
            raise Conflict(VALIDATION_REFUSED, code="delegation_mode")

    async def init_generate(request: Request) -> JSONResponse:
        try:
            data = await _json(request)
            given = data.get("public_key")
            pow_round = PowRound.from_json(data, public_key=service.key.pubkey)
            if given and str(given).lower() not in (service.key.pubkey, service.key.npub):
                raise Conflict(
                    "public_key is not this node's key; a node proves only for itself", code="foreign_key"
                )
            await service.start(pow_round, hub_url=data.get("url") or None)
        except GpupoolError as exc:
            return _error(exc)
        return JSONResponse({"status": "OK", "pow_status": service.status()})

    async def status(_request: Request) -> JSONResponse:
        return JSONResponse(service.status())

    async def stop(_request: Request) -> JSONResponse:
        await service.stop()
        return JSONResponse({"status": "OK", "pow_status": service.status()})

    async def init_validate(request: Request) -> JSONResponse:
        try:
            refuse_in_delegation()
            data = await _json(request)
            pow_round = PowRound.from_json(data, public_key=service.key.pubkey)
            validation["round"] = pow_round
        except GpupoolError as exc:
            return _error(exc)
        return JSONResponse(
            {"status": "OK", "block_hash": pow_round.block_hash, "block_height": pow_round.block_height}
        )

    async def validate(request: Request) -> JSONResponse:
        try:
            refuse_in_delegation()
            return JSONResponse(await _validate(service, validation.get("round"), await _json(request)))
        except GpupoolError as exc:
            return _error(exc)
        except (TypeError, ValueError) as exc:
            return _error(InvalidInput(f"malformed request: {exc}", field="body"))

    return [
        Route(f"{PREFIX}/init/generate", init_generate, methods=["POST"]),
        Route(f"{PREFIX}/status", status, methods=["GET"]),
        Route(f"{PREFIX}/stop", stop, methods=["POST"]),
        Route(f"{PREFIX}/init/validate", init_validate, methods=["POST"]),
        Route(f"{PREFIX}/validate", validate, methods=["POST"]),
    ]


async def _validate(service: PowService, known: PowRound | None, data: dict[str, Any]) -> dict[str, Any]:
    """Validate one batch against the round set by ``init/validate`` (or the body's own ``params``)."""
    batch = Batch.from_dict(data)
    if "params" in data or known is None or known.block_hash != batch.block_hash:
        if "params" not in data:
            raise Conflict("call /api/v1/pow/init/validate for this block_hash first", code="no_round")
        known = PowRound.from_json({**data, "public_key": service.key.pubkey})
    r_target = float(data.get("r_target", known.r_target))
    fraud_threshold = float(data.get("fraud_threshold", known.fraud_threshold))
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
