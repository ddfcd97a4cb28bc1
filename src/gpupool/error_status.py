"""The one table from error class to HTTP status (and WebSocket close code), and the error body.

Beside ``errors.py`` and free of any web framework, so every HTTP surface — the hub's API, the node's
PoC API, the delegation server — maps an error the same way without importing another's transport.
"""

from __future__ import annotations

from typing import Any

from gpupool import errors

HTTP_STATUS: dict[type[errors.GpupoolError], int] = {
    errors.InvalidInput: 422,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.PaymentRequired: 402,
    errors.PayloadTooLarge: 413,
    errors.RateLimited: 429,
    errors.Unavailable: 503,
}

# WebSocket close codes: the 4000 range mirrors the HTTP status, so a node reads them the same way.
WS_CLOSE: dict[type[errors.GpupoolError], int] = {cls: 4000 + status for cls, status in HTTP_STATUS.items()}


def status_for(exc: errors.GpupoolError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def ws_close_code(exc: errors.GpupoolError) -> int:
    for cls in type(exc).__mro__:
        if cls in WS_CLOSE:
            return WS_CLOSE[cls]
    return 1011


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}
