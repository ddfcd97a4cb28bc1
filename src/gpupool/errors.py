"""Every error gpupool raises on purpose, in one tree.

Transports map these classes to HTTP statuses, gRPC codes and WebSocket close codes in one table each
(``api/errors.py``, ``rpc/errors.py``), looked up along the class's MRO, so a handler never picks a
status itself.

    GpupoolError
    ├── InvalidInput              422  bad field values the schema could not catch
    ├── Unauthenticated           401  no credentials, or credentials that do not check out
    │   ├── InvalidCredentials         wrong username or password
    │   ├── TokenInvalid               malformed, forged, expired or revoked token
    │   └── SignatureRejected          a signed event failed verification (reason in ``code``)
    ├── Forbidden                 403  authenticated, but not allowed to do this
    ├── NotFound                  404  no such thing, or not yours to see
    ├── Conflict                  409  the request contradicts stored state
    │   └── IdempotencyConflict        a key reused with a different request body
    ├── PaymentRequired           402  not enough available balance
    ├── PayloadTooLarge           413  a body or upload over its limit
    ├── RateLimited               429  too many requests; ``retry_after_s`` says when to come back
    └── Unavailable               503  a dependency (database, GPU inventory, registry) is down
"""

from __future__ import annotations

from typing import Any


class GpupoolError(Exception):
    """Raised for any failure gpupool reports to a client; ``code`` is a stable snake_case name."""

    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details or {}


class InvalidInput(GpupoolError):
    """Raised when a value is well-formed but not acceptable (zero amount, unknown role, bad address)."""

    code = "invalid_input"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None):
        super().__init__(message, code=code, details={"field": field} if field else None)


class Unauthenticated(GpupoolError):
    """Raised when a request carries no credentials or credentials that do not check out."""

    code = "unauthenticated"


class InvalidCredentials(Unauthenticated):
    """Raised when a username and password do not match (never says which one was wrong)."""

    code = "invalid_credentials"


class TokenInvalid(Unauthenticated):
    """Raised when a bearer, refresh or session token is malformed, forged, expired or revoked."""

    code = "invalid_token"


class SignatureRejected(Unauthenticated):
    """Raised when a signed event is forged, stale, replayed or signed by the wrong key."""

    code = "bad_signature"


class Forbidden(GpupoolError):
    """Raised when the caller is known but their role or ownership does not allow the action."""

    code = "forbidden"


class NotFound(GpupoolError):
    """Raised when the thing does not exist or the caller may not know that it does."""

    code = "not_found"


class Conflict(GpupoolError):
    """Raised when a request contradicts what is already stored (duplicate username, wrong state)."""

    code = "conflict"


class IdempotencyConflict(Conflict):
    """Raised when an idempotency key is reused for a request that differs from the first one."""

    code = "idempotency_conflict"


class PaymentRequired(GpupoolError):
    """Raised when an account's available balance cannot cover a transfer or an escrow hold."""

    code = "insufficient_funds"


class PayloadTooLarge(GpupoolError):
    """Raised when a request body or an uploaded bundle exceeds its configured limit."""

    code = "payload_too_large"


class RateLimited(GpupoolError):
    """Raised when a client exceeds its request budget; ``retry_after_s`` is sent as Retry-After."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int, code: str | None = None):
        super().__init__(message, code=code, details={"retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s


class Unavailable(GpupoolError):
    """Raised when a dependency the request needs (database, registry, GPU inventory) is down."""

    code = "unavailable"
