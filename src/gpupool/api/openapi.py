"""The OpenAPI document says every status a route answers, with the one error body they all share.

FastAPI documents the 200 and a 422 of its own shape; the hub answers 401/402/403/404/409/413/429/503
too, each as ``{"error": {"code", "message", "details"}}`` (``api/errors.py``). The statuses follow
from what a route depends on (a bearer token, the admin role, a rate budget, a path parameter, a
body), plus a short table for what only the route's service knows (money: 402; state: 409).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from starlette.routing import BaseRoute

from gpupool.api import deps

try:  # FastAPI >= 0.16x includes routers lazily; app.routes then holds one entry per router
    from fastapi.routing import iter_route_contexts as _iter_contexts
except ImportError:  # pragma: no cover - older FastAPI: app.routes is already flat
    _iter_contexts = None  # type: ignore[assignment]

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
ERROR_SCHEMAS: dict[str, Any] = {
    "ErrorBody": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"}},
    },
    "ErrorDetail": {
        "type": "object",
        "required": ["code", "message", "details"],
        "properties": {
            "code": {"type": "string", "description": "stable snake_case name of the error"},
            "message": {"type": "string"},
            "details": {
                "type": "object",
                "description": "e.g. field (422), limit (413), retry_after_s (429)",
            },
        },
    },
}
DESCRIPTIONS = {
    400: "Malformed request (a multipart form that cannot be read)",
    401: "No credentials, or credentials (token, session, signature) that do not check out",
    402: "The available balance does not cover the amount or the escrow hold",
    403: "Authenticated, but not allowed to do this",
    404: "No such thing, or not yours to see",
    409: "The request contradicts stored state (a reused key, a wrong state)",
    413: "A body, an upload or a bundle over its limit",
    422: "A field is invalid; details.field names it",
    429: "Too many requests; Retry-After says when to come back",
    503: "A dependency the request needs (database, registry) is down",
}
# What only the route's service knows: statuses beyond those its dependencies and method imply.
SIGNED = {401, 403}  # a signed body: a bad, stale or replayed signature; a key not admitted
# A node's session token: unknown, expired or revoked (too many of those from one address: 429);
# another node's task.
SESSION = {401, 403, 429}
# The seed dialects (api/dialects): an API key or a bearer of their own, nodes by id.
DIALECT_PREFIXES = ("/api/",)
DIALECT = {401, 403, 404}
EXTRA: dict[tuple[str, str], set[int]] = {
    ("POST", "/v1/tasks"): {402},
    ("POST", "/v1/tasks/batch"): {402},
    ("POST", "/v1/transfers"): {402},
    ("POST", "/api/tasks/add"): {402},  # GGB's task add holds the escrow as POST /v1/tasks does
    ("POST", "/v1/auth/login"): {401, 429},
    ("POST", "/v1/auth/refresh"): {401},
    ("POST", "/v1/miners/register"): SIGNED,
    ("POST", "/workers"): SIGNED,
    ("POST", "/v1/poc/batches"): SIGNED,
    ("POST", "/v1/tasks/{task_id}/result"): SIGNED,
    ("POST", "/v1/miners/update"): SESSION,
    ("POST", "/v1/miners/logout"): SESSION,
    ("GET", "/v1/miners/lease/renew"): SESSION,
    ("GET", "/v1/poc/round"): {404},
    ("POST", "/v1/miners/heartbeat"): DIALECT,  # HiveMind's heartbeat, by its worker's token
    ("GET", "/v1/miners/status"): DIALECT,
}
ALWAYS = {422, 503}
# A write may name something gone (404) or contradict stored state (409); its body may be too big
# (413) or not parse at all (400).
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
WRITE_STATUSES = {400, 404, 409, 413}
_BEARER = {deps.get_principal: {401}, deps.get_admin: {401, 403}, deps.get_coordinator: {401, 403}}


def install(app: FastAPI) -> None:
    """Replace ``app.openapi`` by one that adds the error statuses and the error body to FastAPI's."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            document.setdefault("components", {}).setdefault("schemas", {}).update(ERROR_SCHEMAS)
            document["components"]["schemas"].pop("HTTPValidationError", None)
            document["components"]["schemas"].pop("ValidationError", None)
            for route in flat_routes(app.routes):
                if getattr(route, "include_in_schema", False) and hasattr(route, "dependant"):
                    _declare(document["paths"][route.path_format], route)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def flat_routes(routes: list[BaseRoute]) -> Iterator[Any]:
    """Every route of the app, those of included routers too (each with its full path)."""
    if _iter_contexts is None:
        yield from routes
    else:
        yield from _iter_contexts(routes)


def _declare(path_item: dict[str, Any], route: Any) -> None:
    for method in route.methods or ():
        operation = path_item.get(method.lower())
        if operation is None:
            continue
        responses = operation.setdefault("responses", {})
        for status in sorted(statuses_of(route, method)):
            responses[str(status)] = _error_response(status)


def statuses_of(route: Any, method: str) -> set[int]:
    """The error statuses ``route`` may answer ``method`` with."""
    found = set(ALWAYS)
    calls = set(_calls(route.dependant))
    for call, statuses in _BEARER.items():
        if call in calls:
            found |= statuses
    if deps.rate_limit in calls:
        found.add(429)
    if route.dependant.path_params:
        found.add(404)
    if route.body_field is not None or method in WRITES:
        found |= WRITE_STATUSES
    if any(p.alias == "X-Session-Token" for p in route.dependant.header_params):
        found |= SESSION | {404}
    if route.path_format.startswith(DIALECT_PREFIXES):
        found |= DIALECT
    return found | EXTRA.get((method, route.path_format), set())


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": DESCRIPTIONS[status],
        "content": {"application/json": {"schema": ERROR_REF}},
    }
    if status == 429:
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    return response
