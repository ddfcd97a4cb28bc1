"""Users, passwords, JWT access tokens and single-use refresh tokens.

A refresh token is ``<id>.<secret>``; only the secret's sha256 is stored. Each refresh spends the
token and issues the next one of its family; presenting a spent token again means it was stolen or
replayed, so the whole family is revoked and the caller must log in again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import jwt
from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.core.ledger import AccountType, hold_account, username_account, validate_username
from gpupool.core.model import Principal, Role, TokenPair
from gpupool.core.ports import Clock
from gpupool.errors import Forbidden, InvalidCredentials, InvalidInput, TokenInvalid
from gpupool.hub.passwords import MIN_PASSWORD_LENGTH, Passwords
from gpupool.hub.throttle import Budget
from gpupool.store.db import Database
from gpupool.store.ledger_repo import LedgerRepo
from gpupool.store.users_repo import RefreshRecord, UserRecord, UsersRepo

JWT_ALGORITHM = "HS256"


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
    ) -> None:
        self.db = db
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
        if user is None or not ok or user.disabled:
            await self._failures_by_user.hit(username, message)
            await self._failures_by_client.hit(client, message)
            raise InvalidCredentials("invalid username or password")
        await self._failures_by_user.clear(username)
        return await self._issue(user, family_id=secrets.token_hex(12))

    async def refresh(self, refresh_token: str) -> TokenPair:
        token_id, _, secret = refresh_token.partition(".")
        now = self.clock.now()
        async with self.db.read() as conn:
            record = await UsersRepo(conn).refresh_by_id(token_id)
        if record is None or not hmac.compare_digest(record.secret_hash, _digest(secret)):
            raise TokenInvalid("invalid refresh token")
        if record.expires_at <= now:
            raise TokenInvalid("refresh token expired", code="token_expired")

        async def spend(conn: AsyncConnection) -> bool:
            repo = UsersRepo(conn)
            if await repo.spend_refresh(record.id, now):
                return True
            await repo.revoke_family(record.family_id)
            return False

        if not await self.db.run(spend):
            raise TokenInvalid(
                "refresh token already used; its family has been revoked", code="refresh_token_reused"
            )
        async with self.db.read() as conn:
            user = await UsersRepo(conn).by_id(record.user_id)
        if user is None or user.disabled:
            raise TokenInvalid("user no longer exists")
        return await self._issue(user, family_id=record.family_id)

    async def reissue(self, principal: Principal) -> TokenPair:
        """A new pair for the holder of a still valid access token (HiveMind's RefreshToken, gRPC).

        It starts a family of its own; the user must still exist and not be disabled.
        """
        async with self.db.read() as conn:
            user = await UsersRepo(conn).by_id(principal.user_id)
        if user is None or user.disabled:
            raise TokenInvalid("user no longer exists")
        return await self._issue(user, family_id=secrets.token_hex(12))

    def authenticate(self, access_token: str) -> Principal:
        try:
            claims = jwt.decode(
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
        try:
            return Principal(
                user_id=int(claims["sub"]), username=str(claims["name"]), role=Role(claims["role"])
            )
        except (ValueError, KeyError) as exc:
            raise TokenInvalid("invalid access token") from exc

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

    async def _issue(self, user: UserRecord, family_id: str) -> TokenPair:
        now = self.clock.now()
        claims = {
            "sub": str(user.id),
            "name": user.username,
            "role": user.role,
            "typ": "access",
            "iat": int(now),
            "exp": int(now) + self.config.access_ttl_s,
            "jti": secrets.token_hex(8),
        }
        access = jwt.encode(claims, self.config.jwt_secret, algorithm=JWT_ALGORITHM)
        token_id, secret = secrets.token_hex(12), secrets.token_urlsafe(32)
        record = RefreshRecord(
            id=token_id,
            family_id=family_id,
            user_id=user.id,
            secret_hash=_digest(secret),
            issued_at=now,
            expires_at=now + self.config.refresh_ttl_s,
            used_at=None,
            revoked=False,
        )

        async def work(conn: AsyncConnection) -> None:
            await UsersRepo(conn).add_refresh(record)

        await self.db.run(work)
        return TokenPair(
            access_token=access, refresh_token=f"{token_id}.{secret}", expires_in=self.config.access_ttl_s
        )


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
