"""Login, token refresh, the caller's identity and user creation."""

from __future__ import annotations

from fastapi import APIRouter, status

from gpupool.api.deps import AdminDep, ClientDep, HubDep, PrincipalDep
from gpupool.api.schemas import LoginIn, RefreshIn, TokenOut, UserIn, UserOut
from gpupool.core.ledger import username_account
from gpupool.core.model import TokenPair

router = APIRouter(prefix="/v1", tags=["auth"])


def _tokens(pair: TokenPair) -> TokenOut:
    return TokenOut(
        access_token=pair.access_token, refresh_token=pair.refresh_token, expires_in=pair.expires_in
    )


@router.post("/auth/login", response_model=TokenOut)
async def login(body: LoginIn, hub: HubDep, client: ClientDep) -> TokenOut:
    return _tokens(await hub.auth.login(body.username, body.password, client))


@router.post("/auth/refresh", response_model=TokenOut)
async def refresh(body: RefreshIn, hub: HubDep) -> TokenOut:
    return _tokens(await hub.auth.refresh(body.refresh_token))


@router.get("/me", response_model=UserOut)
async def me(principal: PrincipalDep) -> UserOut:
    return UserOut(
        id=principal.user_id,
        username=principal.username,
        role=principal.role.value,
        account=principal.account,
    )


@router.post("/users", response_model=UserOut, status_code=status.HTTP_201_CREATED)
async def create_user(body: UserIn, hub: HubDep, admin: AdminDep) -> UserOut:
    user = await hub.auth.create_user(admin, body.username, body.password, body.role)
    return UserOut(
        id=user.id, username=user.username, role=user.role, account=username_account(user.username)
    )
