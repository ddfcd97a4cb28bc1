"""Typed FastAPI dependencies: the hub's services and the calling principal."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gpupool.core.model import Principal, Role
from gpupool.errors import Forbidden, Unauthenticated
from gpupool.hub.container import Hub

_bearer = HTTPBearer(auto_error=False)


async def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


HubDep = Annotated[Hub, Depends(get_hub)]


async def get_principal(
    hub: HubDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("missing bearer token")
    return await hub.auth.authenticate(credentials.credentials)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise Forbidden("admin role required")
    return principal


AdminDep = Annotated[Principal, Depends(get_admin)]


def address_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def client_address(request: Request) -> str:
    # Dependencies are async on purpose: FastAPI runs a plain ``def`` one on a worker thread.
    return address_of(request)


ClientDep = Annotated[str, Depends(client_address)]


async def rate_limit(request: Request, hub: HubDep) -> None:
    """One budget per client address and route (SPEC §3.3: 50 requests per second by default)."""
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    await hub.rate_limit.hit(f"{address_of(request)}:{path}", "too many requests; slow down")


RateLimitDep = Depends(rate_limit)

COORDINATOR_SECRET_USER = Principal(user_id=0, username="coordinator-secret", role=Role.COORDINATOR)
COORDINATOR_NETWORK_USER = Principal(user_id=0, username="coordinator-network", role=Role.COORDINATOR)


def _trusted_network(hub: Hub, request: Request) -> bool:
    """The caller's address is inside ``GPUPOOL_HUB_COORDINATOR_CIDRS`` (empty by default)."""
    if not hub.settings.coordinator_cidrs or request.client is None:
        return False
    try:
        address = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(c, strict=False) for c in hub.settings.coordinator_cidrs)


async def get_coordinator(
    hub: HubDep,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    secret: Annotated[str | None, Header(alias="X-Coordinator-Secret")] = None,
) -> Principal:
    """A coordinator or admin token, or the shared coordinator secret (compared in constant time)."""
    configured = hub.settings.coordinator_shared_secret
    if secret is None and credentials is None and _trusted_network(hub, request):
        return COORDINATOR_NETWORK_USER  # seed 002's model: the coordinator is known by its network
    if secret is not None:
        if configured is None or not hmac.compare_digest(
            secret.encode(), configured.get_secret_value().encode()
        ):
            raise Unauthenticated("wrong coordinator secret", code="bad_coordinator_secret")
        return COORDINATOR_SECRET_USER
    principal = await get_principal(hub, credentials)
    if principal.role not in (Role.COORDINATOR, Role.ADMIN):
        raise Forbidden("coordinator or admin role required")
    return principal


CoordinatorDep = Annotated[Principal, Depends(get_coordinator)]
