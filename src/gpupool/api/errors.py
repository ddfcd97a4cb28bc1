"""The handlers that write the error body, by the one table in ``error_status`` (beside ``errors``).

Every 4xx/5xx body is ``{"error": {"code", "message", "details"}}``; the status is looked up along the
raised class's MRO so a subclass inherits its parent's status unless listed itself.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from gpupool import errors
from gpupool.api.openapi import flat_routes
from gpupool.error_status import HTTP_STATUS, WS_CLOSE, error_body, status_for, ws_close_code

__all__ = ["HTTP_STATUS", "WS_CLOSE", "error_body", "install", "status_for", "ws_close_code"]

log = logging.getLogger("gpupool.api")

_STARLETTE_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated", 403: "forbidden"}


async def _gpupool_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.GpupoolError)
    status = status_for(exc)
    headers = {}
    if isinstance(exc, errors.RateLimited):
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, errors.Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=status, headers=headers)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {
            "field": _field_name(tuple(e.get("loc", ()))),
            "message": e.get("msg", "invalid"),
            "type": e.get("type"),
        }
        for e in exc.errors()
    ]
    first = problems[0] if problems else {"field": "body", "message": "invalid request"}
    message = f"{first['field']}: {first['message']}"
    return JSONResponse(
        error_body("invalid_input", message, {"field": first["field"], "errors": problems}), status_code=422
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STARLETTE_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method of the path the request matched, across its routes: Starlette's own ``Allow``
    names only those of the first route that matched (FastAPI makes one route per method)."""
    routes = [r for r in flat_routes(request.app.routes) if getattr(r, "methods", None)]
    matched = next((r for r in routes if r.matches(request.scope)[0] is not Match.NONE), None)
    if matched is None:
        return []
    return sorted({m for r in routes if r.path_format == matched.path_format for m in r.methods})


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.GpupoolError, _gpupool_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
