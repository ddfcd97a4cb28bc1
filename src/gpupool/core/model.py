"""Small value types shared by the core and the services."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Identity(StrEnum):
    """How a node proves who it is (SPEC §8): its own key signs, or an account's credential vouches."""

    SIGNED = "signed"
    API_KEY = "api_key"
    USER_TOKEN = "user_token"


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"
    COORDINATOR = "coordinator"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a signed-in user (from a verified access token)."""

    user_id: int
    username: str
    role: Role

    @property
    def account(self) -> str:
        return f"user:{self.username}"

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"
