"""Users, passwords, JWT access tokens and single-use refresh tokens.

A refresh token is ``<id>.<secret>``; only the secret's sha256 is stored. Each refresh spends the
token and issues the next one of its family; presenting a spent token again means it was stolen or
replayed, so the family is revoked, every session of the user ends and the caller must log in again.
An access token names the user's id and generation; a user disabled, deleted or logged out everywhere
has a new generation and the old tokens are refused on the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import jwt
from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.core.ledger import AccountType, hold_account, username_account, validate_username
from gpupool.core.model import Principal, Role, TokenPair
from gpupool.core.ports import Clock
from gpupool.errors import Forbidden, InvalidCredentials, InvalidInput, TokenInvalid
from gpupool.hub.passwords import MIN_PASSWORD_LENGTH, Passwords
from gpupool.hub.throttle import Budget
from gpupool.hub.user_state import UserStateCache
from gpupool.store.db import Database
from gpupool.store.ledger_repo import LedgerRepo
from gpupool.store.users_repo import FamilyRecord, RefreshRecord, UserRecord, UsersRepo

JWT_ALGORITHM = "HS256"
_TOKEN_ID = re.compile(r"[0-9a-f]{24}")  # secrets.token_hex(12), the id part of a refresh token


@dataclass(frozen=True, slots=True)
class AuthConfig:
    jwt_secret: str
    access_ttl_s: int
    refresh_ttl_s: int


class AuthService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        passwords: Passwords,
        config: AuthConfig,
        failures_by_user: Budget,
        failures_by_client: Budget,
        users: UserStateCache,
    ) -> None:
        self.db = db
        self.users = users
        self.clock = clock
        self.passwords = passwords
        self.config = config
        self._failures_by_user = failures_by_user
        self._failures_by_client = failures_by_client

    async def login(self, username: str, password: str, client: str) -> TokenPair:
        message = "too many failed logins; try again later"
        await self._failures_by_user.check(username, message)
        await self._failures_by_client.check(client, message)
        async with self.db.read() as conn:
            user = await UsersRepo(conn).by_username(username)
        ok = await self.passwords.verify(user.password_hash if user else None, password)
        if user is None or not ok or not user.active:
            await self._failures_by_user.hit(username, message)
            await self._failures_by_client.hit(client, message)
            raise InvalidCredentials("invalid username or password")
        await self._failures_by_user.clear(username)
        now = self.clock.now()
        family = FamilyRecord(secrets.token_hex(12), user.id, user.generation, now, None)

        async def start(conn: AsyncConnection) -> TokenPair:
            repo = UsersRepo(conn)
            await repo.add_family(family)
            return await self._issue(repo, user, family, now)

        return await self.db.run(start)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Spend a refresh token and issue the next of its family, in one transaction.

        The family's row is locked first (one writer on SQLite), so two uses of one token are
        ordered: the second sees the first's spend, revokes the family and ends every session of
        the user, including the tokens the first one was just given.
        """
        token_id, _, secret = refresh_token.partition(".")
        if not _TOKEN_ID.fullmatch(token_id):  # junk never reaches the database (NUL bytes fail there)
            raise TokenInvalid("invalid refresh token")
        now = self.clock.now()
        async with self.db.read() as conn:
            record = await UsersRepo(conn).refresh_by_id(token_id)
        if record is None or not hmac.compare_digest(record.secret_hash, _digest(secret)):
            raise TokenInvalid("invalid refresh token")
        if record.expires_at <= now:
            raise TokenInvalid("refresh token expired", code="token_expired")

        async def rotate(conn: AsyncConnection) -> TokenPair | str:
            repo = UsersRepo(conn)
            family = await repo.lock_family(record.family_id)
            user = await repo.by_id(record.user_id)
            if family is None or family.revoked_at is not None or user is None:
                return "revoked"
            if not user.active or family.generation != user.generation:
                return "revoked"
            if not await repo.spend_refresh(record.id, now):
                await repo.revoke_family_at(family.id, now)
                await repo.set_state(user.id, bump=True)
                return "reused"
            return await self._issue(repo, user, family, now)

        outcome = await self.db.run(rotate)
        if outcome == "reused":
            self.users.invalidate(record.user_id)
            raise TokenInvalid(
                "refresh token already used; every session of this user has been revoked",
                code="refresh_token_reused",
            )
        if isinstance(outcome, str):
            raise TokenInvalid("refresh token revoked; log in again", code="token_revoked")
        return outcome

    async def exchange(self, access_token: str) -> TokenPair:
        """A new access token for a valid one (HiveMind's RefreshToken over gRPC), never a refresh token.

        The new token ends no later than the session the old one came from (``sess_exp``, the expiry
        of the refresh token issued beside it), so a leaked access token cannot be chained forever.
        """
        claims = self._decode(access_token)
        await self._principal(claims)
        now = int(self.clock.now())
        session_end = claims.get("sess_exp")
        if not isinstance(session_end, int):
            raise TokenInvalid("this access token cannot be exchanged; log in again")
        if session_end <= now:
            raise TokenInvalid("session over; log in again", code="token_expired")
        expires_at = min(now + self.config.access_ttl_s, session_end)
        claims.update(iat=now, exp=expires_at, jti=secrets.token_hex(8))
        access = jwt.encode(claims, self.config.jwt_secret, algorithm=JWT_ALGORITHM)
        return TokenPair(access_token=access, refresh_token="", expires_in=expires_at - now)

    async def authenticate(self, access_token: str) -> Principal:
        """The caller behind an access token, if its user still exists, is active and has not had
        every session revoked since (checked against a short-lived in-process cache)."""
        return await self._principal(self._decode(access_token))

    def _decode(self, access_token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                access_token,
                self.config.jwt_secret,
                algorithms=[JWT_ALGORITHM],
                options={"verify_exp": False, "require": ["sub", "exp", "role", "name"]},
            )
        except jwt.PyJWTError as exc:
            raise TokenInvalid("invalid access token") from exc
        if claims.get("typ") != "access":
            raise TokenInvalid("not an access token")
        if float(claims["exp"]) <= self.clock.now():
            raise TokenInvalid("access token expired", code="token_expired")
        return claims

    async def _principal(self, claims: dict[str, Any]) -> Principal:
        try:
            user_id, generation = int(claims["sub"]), int(claims.get("gen", 0))
        except (ValueError, TypeError) as exc:
            raise TokenInvalid("invalid access token") from exc
        state = await self.users.get(user_id)
        if (
            state is None
            or not state.active
            or state.generation != generation
            or state.username != claims["name"]
        ):
            raise TokenInvalid("token revoked; log in again", code="token_revoked")
        return Principal(user_id=state.user_id, username=state.username, role=Role(state.role))

    async def create_user(
        self, actor: Principal | None, username: str, password: str, role: str
    ) -> UserRecord:
        """Create a user and their accounts; only an admin may (``actor=None`` is the bootstrap)."""
        if actor is not None and not actor.is_admin:
            raise Forbidden("only an admin can create users")
        validate_username(username)
        try:
            parsed_role = Role(role)
        except ValueError as exc:
            raise InvalidInput(f"role must be one of {[r.value for r in Role]}", field="role") from exc
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidInput(
                f"password must be at least {MIN_PASSWORD_LENGTH} characters", field="password"
            )
        password_hash = await self.passwords.hash(password)
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> UserRecord:
            user = await UsersRepo(conn).create(username, password_hash, parsed_role.value, now)
            ledger = LedgerRepo(conn)
            account = username_account(username)
            await ledger.ensure_account(account, AccountType.USER.value, now)
            await ledger.ensure_account(hold_account(account), AccountType.HOLD.value, now)
            return user

        return await self.db.run(work)

    async def ensure_admin(self, password: str | None) -> str | None:
        """Create ``admin`` on first start; returns the generated password when none was given."""
        async with self.db.read() as conn:
            if await UsersRepo(conn).by_username("admin") is not None:
                return None
        generated = password is None
        password = password or secrets.token_urlsafe(18)
        await self.create_user(None, "admin", password, Role.ADMIN.value)
        return password if generated else None

    async def _issue(self, repo: UsersRepo, user: UserRecord, family: FamilyRecord, now: float) -> TokenPair:
        """The next refresh token of ``family`` and an access token bound to the user's id and generation."""
        token_id, secret = secrets.token_hex(12), secrets.token_urlsafe(32)
        refresh_expires_at = now + self.config.refresh_ttl_s
        await repo.add_refresh(
            RefreshRecord(
                id=token_id,
                family_id=family.id,
                user_id=user.id,
                secret_hash=_digest(secret),
                issued_at=now,
                expires_at=refresh_expires_at,
                used_at=None,
                revoked=False,
            )
        )
        claims = {
            "sub": str(user.id),
            "name": user.username,
            "role": user.role,
            "typ": "access",
            "gen": user.generation,
            "fam": family.id,
            "auth_time": int(family.auth_time),
            "sess_exp": int(refresh_expires_at),
            "iat": int(now),
            "exp": int(now) + self.config.access_ttl_s,
            "jti": secrets.token_hex(8),
        }
        access = jwt.encode(claims, self.config.jwt_secret, algorithm=JWT_ALGORITHM)
        return TokenPair(
            access_token=access, refresh_token=f"{token_id}.{secret}", expires_in=self.config.access_ttl_s
        )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
