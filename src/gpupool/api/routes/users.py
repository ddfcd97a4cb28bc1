"""Admin: disable, enable and delete users, and end every session of a user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status
from pydantic import BaseModel

from gpupool.api.deps import AdminDep, HubDep
from gpupool.core.ledger import username_account
from gpupool.store.users_repo import UserRecord

router = APIRouter(prefix="/v1/admin/users", tags=["auth"])

UsernamePath = Annotated[str, Path(min_length=1, max_length=64)]


class ManagedUserOut(BaseModel):
    id: int
    username: str
    role: str
    account: str
    disabled: bool


def _out(user: UserRecord) -> ManagedUserOut:
    return ManagedUserOut(
        id=user.id,
        username=user.username,
        role=user.role,
        account=username_account(user.username),
        disabled=user.disabled,
    )


@router.post("/{username}/disable", response_model=ManagedUserOut)
async def disable_user(username: UsernamePath, hub: HubDep, admin: AdminDep) -> ManagedUserOut:
    """The user can no longer sign in; every token they hold is refused from now on."""
    return _out(await hub.user_admin.disable(admin, username))


@router.post("/{username}/enable", response_model=ManagedUserOut)
async def enable_user(username: UsernamePath, hub: HubDep, admin: AdminDep) -> ManagedUserOut:
    """The user may sign in again (tokens from before the disable stay dead)."""
    return _out(await hub.user_admin.enable(admin, username))


@router.post("/{username}/revoke-sessions", response_model=ManagedUserOut)
async def revoke_sessions(username: UsernamePath, hub: HubDep, admin: AdminDep) -> ManagedUserOut:
    """Every access and refresh token of the user is refused from now on; the password still works."""
    return _out(await hub.user_admin.revoke_sessions(admin, username))


@router.delete("/{username}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_user(username: UsernamePath, hub: HubDep, admin: AdminDep) -> None:
    """Delete a user whose accounts are empty (409 ``account_not_empty`` otherwise)."""
    await hub.user_admin.delete(admin, username)
