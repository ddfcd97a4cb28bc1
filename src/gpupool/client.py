"""Python SDK for the hub's auth and ledger API (synchronous, over httpx).

Every error envelope ``{"error": {"code", "message", "details"}}`` becomes one ``ClientError``; a hub
that cannot be reached is ``ClientError(0, "unreachable", …)``. An expired access token is refreshed
once, transparently, and the new pair is handed to ``on_tokens`` so a caller can persist it.

Retries: a request that never reached the hub (connect failure) is retried whatever it is; one that may
have reached it (the response was lost) is retried only when repeating it is harmless — reads, and
transfers and mints, which carry one idempotency key across every attempt so money moves once. Login,
user creation and token refresh (single-use refresh tokens) are never re-sent after a send.

Amounts cross the API as integer micro-units; ``parse_amount`` and ``format_amount`` convert from and
to the token notation people type, without floats.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx

MICRO_PER_TOKEN = 1_000_000
TOKEN_DECIMALS = 6
_TOKENS_RE = re.compile(r"^(?P<whole>\d*)(?:\.(?P<frac>\d*))?$")
_MAX_DIGITS = 30
_HINT = "(write tokens like 1.5, or micro-units like 1500000u)"
T = TypeVar("T")


class ClientError(Exception):
    """Raised for any error the hub reports, and with status 0 when the hub cannot be reached."""

    def __init__(self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None):
        super().__init__(f"{message} ({code})")
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


class AmountError(ValueError):
    """Raised when a typed amount is not a positive number of tokens or micro-units."""


def parse_amount(text: str) -> int:
    """``"1.5"`` (tokens) or ``"1500000u"`` (micro-units) → 1_500_000 micro-units; positive only."""
    raw = text.strip()
    if raw.startswith("-"):
        raise AmountError(f"amount must be positive, got {text!r}")
    if not raw.isascii():
        raise AmountError(f"not an amount: {text!r} {_HINT}")
    if raw.lower().endswith("u"):
        digits = raw[:-1]
        if not digits.isdigit():
            raise AmountError(f"not an amount of micro-units: {text!r} (write a whole number, e.g. 1500000u)")
        return _checked(digits, 0, text)
    match = _TOKENS_RE.match(raw)
    if match is None or raw in ("", "."):
        raise AmountError(f"not an amount: {text!r} {_HINT}")
    frac = match["frac"] or ""
    if len(frac) > TOKEN_DECIMALS:
        raise AmountError(
            f"too many decimals in {text!r}: at most {TOKEN_DECIMALS} (1 micro-unit = 0.000001 token)"
        )
    return _checked(match["whole"], int(frac.ljust(TOKEN_DECIMALS, "0")), text, MICRO_PER_TOKEN)


def _checked(whole: str, frac_micro: int, text: str, unit_micro: int = 1) -> int:
    if len(whole.lstrip("0")) > _MAX_DIGITS:
        raise AmountError(f"amount too large: {text!r}")
    micro = int(whole or "0") * unit_micro + frac_micro
    if micro <= 0:
        raise AmountError(f"amount must be greater than zero, got {text!r}")
    return micro


def format_amount(micro: int) -> str:
    """1_500_000 → ``"1.500000"``: exact integer arithmetic, always six decimals."""
    whole, frac = divmod(abs(micro), MICRO_PER_TOKEN)
    return f"{'-' if micro < 0 else ''}{whole}.{frac:0{TOKEN_DECIMALS}d}"


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    role: str
    account: str


@dataclass(frozen=True, slots=True)
class Balance:
    account: str
    available_micro: int
    held_micro: int


@dataclass(frozen=True, slots=True)
class Transfer:
    """A posting as the hub reports it; ``replayed`` means the idempotency key had been used already."""

    id: int
    kind: str
    source: str | None
    to: str | None
    amount_micro: int
    idempotency_key: str | None
    created_at: float
    replayed: bool


@dataclass(frozen=True, slots=True)
class TransferPage:
    transfers: list[Transfer]
    next_before: int | None


@dataclass(frozen=True, slots=True)
class TrialBalance:
    balanced: bool
    total_micro: int
    accounts: list[dict[str, Any]]
    totals_by_type: dict[str, int]


@dataclass(frozen=True, slots=True)
class Health:
    status: str
    version: str
    online_miners: int
    avg_latency_ms: float | None
    features: dict[str, Any]


TokensCallback = Callable[[Tokens], None]


class Client:
    """A session with one hub; holds the current token pair and refreshes it when it expires."""

    def __init__(
        self,
        base_url: str,
        access_token: str | None = None,
        refresh_token: str | None = None,
        timeout: float = 10.0,
        on_tokens: TokensCallback | None = None,
        *,
        retries: int = 2,
        retry_backoff_s: float = 0.2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.access_token = access_token
        self.refresh_token = refresh_token
        self.on_tokens = on_tokens
        self.retries = retries
        self.retry_backoff_s = retry_backoff_s
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- auth -------------------------------------------------------------------------------------

    def login(self, username: str, password: str) -> Tokens:
        body = {"username": username, "password": password}
        return self._take_tokens(self._call("POST", "/v1/auth/login", json=body, auth=False))

    def refresh(self) -> Tokens:
        """Spend the refresh token for a new pair; it is single-use, so this is never re-sent."""
        if not self.refresh_token:
            raise ClientError(401, "unauthenticated", "no refresh token; log in again")
        body = {"refresh_token": self.refresh_token}
        return self._take_tokens(self._call("POST", "/v1/auth/refresh", json=body, auth=False))

    def me(self) -> User:
        return _parse(_user, self._call("GET", "/v1/me", idempotent=True))

    def create_user(self, username: str, password: str, role: str = "user") -> User:
        body = {"username": username, "password": password, "role": role}
        return _parse(_user, self._call("POST", "/v1/users", json=body))

    def manage_user(self, username: str, action: str) -> User:
        """``disable``, ``enable`` or ``revoke-sessions`` a user (admin)."""
        path = f"/v1/admin/users/{quote(username, safe='')}/{action}"
        return _parse(_user, self._call("POST", path, idempotent=True))

    def delete_user(self, username: str) -> None:
        """Delete a user whose accounts are empty (admin)."""
        self._call("DELETE", f"/v1/admin/users/{quote(username, safe='')}", idempotent=True)

    # -- ledger -----------------------------------------------------------------------------------

    def balance(self) -> Balance:
        return _parse(_balance, self._call("GET", "/v1/balance", idempotent=True))

    def transfer(self, to: str, amount_micro: int, idempotency_key: str | None = None) -> Transfer:
        """Move ``amount_micro`` to ``to``; retries reuse one key, so money moves at most once."""
        body = {"to": to, "amount": amount_micro, "idempotency_key": idempotency_key or str(uuid.uuid4())}
        return _parse(_transfer, self._call("POST", "/v1/transfers", json=body, idempotent=True))

    def transfers(self, limit: int = 50, before: int | None = None) -> TransferPage:
        params: dict[str, int] = {"limit": limit} | ({"before": before} if before is not None else {})
        return _parse(_page, self._call("GET", "/v1/transfers", params=params, idempotent=True))

    def mint(self, to: str, amount_micro: int, idempotency_key: str | None = None) -> Transfer:
        body = {"to": to, "amount": amount_micro, "idempotency_key": idempotency_key or str(uuid.uuid4())}
        return _parse(_transfer, self._call("POST", "/v1/admin/mint", json=body, idempotent=True))

    def account(self, account: str) -> Balance:
        path = f"/v1/admin/accounts/{quote(account, safe=':')}"
        return _parse(_balance, self._call("GET", path, idempotent=True))

    def trial_balance(self) -> TrialBalance:
        return _parse(_trial_balance, self._call("GET", "/v1/admin/ledger/trial-balance", idempotent=True))

    def health(self) -> Health:
        return _parse(_health, self._call("GET", "/v1/health", auth=False, idempotent=True))

    # -- registry and matching (JSON as the hub returns it: SPEC §3.2, §3.3) ----------------------

    def miners(self, status: str | None = None, page: int = 1, page_size: int = 50) -> dict[str, Any]:
        params: dict[str, int | str] = {"page": page, "page_size": page_size} | (
            {"status": status} if status else {}
        )
        return dict(self._call("GET", "/v1/miners", params=params, idempotent=True))

    def match(self, request: Mapping[str, Any], coordinator_secret: str | None = None) -> dict[str, Any]:
        """Ask for the best nodes for a job, as a coordinator (token role or the shared secret)."""
        extra = {"X-Coordinator-Secret": coordinator_secret} if coordinator_secret else None
        return dict(self._call("POST", "/v1/match", json=request, idempotent=True, headers=extra))

    def create_api_key(self, name: str = "", owner: str | None = None) -> dict[str, Any]:
        """A new API key of one's own; its ``key`` is in this answer only."""
        body = {"name": name} | ({"owner": owner} if owner else {})
        return dict(self._call("POST", "/v1/api-keys", json=body))

    def api_keys(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/api-keys", idempotent=True))

    def revoke_api_key(self, key_id: str) -> None:
        self._call("DELETE", f"/v1/api-keys/{key_id}", idempotent=True)

    def reward_balance(self, address: str) -> dict[str, Any]:
        params: dict[str, int | str] = {"address": address}
        return dict(self._call("GET", "/v1/rewards/balance", params=params, idempotent=True))

    # -- proof of compute (JSON as the hub returns it: SPEC §3.6) ------------------------------------

    def poc_round(self) -> dict[str, Any]:
        """The open PoC round (public); ``ClientError`` 404 ``no_open_round`` between rounds."""
        return dict(self._call("GET", "/v1/poc/round", auth=False, idempotent=True))

    def poc_results(self, block_height: int) -> dict[str, Any]:
        """A round and, once validated, each node's verdict and weight (public)."""
        return dict(self._call("GET", f"/v1/poc/rounds/{int(block_height)}", auth=False, idempotent=True))

    def open_poc_round(
        self,
        params_name: str | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        r_target: float | None = None,
        duration_sec: int | None = None,
        batch_size: int | None = None,
    ) -> dict[str, Any]:
        """Open the next round (admin): a named parameter set or a full ``params`` dict."""
        fields = {
            "params_name": params_name,
            "params": dict(params) if params is not None else None,
            "r_target": r_target,
            "duration_sec": duration_sec,
            "batch_size": batch_size,
        }
        body = {k: v for k, v in fields.items() if v is not None}
        return dict(self._call("POST", "/v1/admin/poc/rounds", json=body))

    def close_poc_round(self, block_height: int) -> dict[str, Any]:
        """Close and validate a round now (admin); closing again returns the same verdicts."""
        path = f"/v1/admin/poc/rounds/{int(block_height)}/close"
        return dict(self._call("POST", path, idempotent=True))

    def submit_poc_batch(self, signed_body: Mapping[str, Any]) -> dict[str, Any]:
        """Send a batch already signed by the node (``crypto.sign_body`` kind 21004); never retried,
        since the hub refuses a signed event it has seen (a retry after a lost answer reads as a replay)."""
        return dict(self._call("POST", "/v1/poc/batches", json=signed_body, auth=False))

    # -- tasks (JSON as the hub returns it: SPEC §3.4) ---------------------------------------------

    def submit_task(
        self,
        body: Mapping[str, Any],
        bundle: Path | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Submit a task, with ``bundle`` (a .tar.gz) uploaded alongside; ``on_progress(sent, total)``."""
        if bundle is None:
            return dict(self._call("POST", "/v1/tasks", json=body))
        headers = {"Authorization": f"Bearer {self.access_token}"} if self.access_token else {}
        with bundle.open("rb") as raw:
            reader = _ProgressReader(raw, bundle.stat().st_size, on_progress)
            try:
                response = self._http.post(
                    "/v1/tasks",
                    data={"spec": json.dumps(dict(body))},
                    files={"bundle": (bundle.name, reader, "application/gzip")},  # type: ignore[dict-item]
                    headers=headers,
                    timeout=httpx.Timeout(30.0, write=None),
                )
            except httpx.TransportError as exc:
                raise ClientError(0, "unreachable", f"upload to {self.base_url} failed: {exc}") from exc
        return dict(_decode(response))

    def download_artifact(self, task_id: str, path: str, target: Path) -> int:
        """Save one artifact of a finished task to ``target``; returns its size."""
        headers = {"Authorization": f"Bearer {self.access_token}"} if self.access_token else {}
        url = f"/v1/tasks/{quote(task_id)}/artifacts/{quote(path)}"
        with self._http.stream("GET", url, headers=headers) as response:
            if not response.is_success:
                response.read()
                _decode(response)
            target.parent.mkdir(parents=True, exist_ok=True)
            size = 0
            with target.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    size += len(chunk)
        return size

    def tasks(self, limit: int = 50, statuses: Sequence[str] = ()) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, "status": list(statuses)}
        return list(self._call("GET", "/v1/tasks", params=params, idempotent=True))

    def task(self, task_id: str, what: str = "") -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/tasks/{quote(task_id)}{what}", idempotent=True))

    def stop_task(self, task_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/v1/tasks/{quote(task_id)}/stop", idempotent=True))

    def task_output(self, task_id: str, from_seq: int = 0) -> Iterator[tuple[int, str, str]]:
        """(seq, stream, text) as the task prints it, until it ends; resumes after a dropped connection."""
        cursor = from_seq
        while True:
            headers = {"Authorization": f"Bearer {self.access_token}"} if self.access_token else {}
            try:
                with self._http.stream(
                    "GET",
                    f"/v1/tasks/{quote(task_id)}/output",
                    params={"from": cursor},
                    headers=headers,
                    timeout=httpx.Timeout(10.0, read=None),
                ) as response:
                    if not response.is_success:
                        response.read()
                        _decode(response)
                    for seq, stream, data in _sse(response.iter_lines()):
                        if stream == "end":
                            return
                        cursor = seq + 1
                        yield seq, stream, data
            except httpx.TransportError:
                time.sleep(self.retry_backoff_s)  # resume from the last seq seen

    # -- transport --------------------------------------------------------------------------------

    def _take_tokens(self, body: Any) -> Tokens:
        tokens = _parse(_tokens, body)
        self.access_token, self.refresh_token = tokens.access_token, tokens.refresh_token
        if self.on_tokens is not None:
            self.on_tokens(tokens)
        return tokens

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, int | str] | None = None,
        auth: bool = True,
        idempotent: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send, refresh once on an expired access token, and return the decoded body or raise."""
        response = self._send(method, path, json, params, auth, idempotent, headers)
        if auth and response.status_code == 401 and self.refresh_token and _code(response) == "token_expired":
            self.refresh()
            response = self._send(method, path, json, params, auth, idempotent, headers)
        return _decode(response)

    def _send(
        self,
        method: str,
        path: str,
        json: Mapping[str, Any] | None,
        params: Mapping[str, int | str] | None,
        auth: bool,
        idempotent: bool,
        extra_headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.access_token}"} if auth and self.access_token else {}
        headers.update(extra_headers or {})
        attempt = 0
        while True:
            try:
                return self._http.request(method, path, json=json, params=params, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                failure = ClientError(0, "unreachable", f"cannot reach hub at {self.base_url}: {exc}")
                retry = True
            except httpx.TransportError as exc:
                message = f"lost connection to hub at {self.base_url}: {exc}"
                if not idempotent:
                    message += "; the request may or may not have been applied"
                failure = ClientError(0, "unreachable", message)
                retry = idempotent
            if not retry or attempt >= self.retries:
                raise failure
            attempt += 1
            time.sleep(self.retry_backoff_s * attempt)


class _ProgressReader:
    """A file wrapper that reports how much of it was read (the upload's progress)."""

    def __init__(self, raw: Any, total: int, on_progress: Callable[[int, int], None] | None) -> None:
        self.raw, self.total, self.sent, self.on_progress = raw, total, 0, on_progress

    def read(self, size: int = -1) -> bytes:
        chunk: bytes = self.raw.read(size)
        self.sent += len(chunk)
        if self.on_progress is not None:
            self.on_progress(self.sent, self.total)
        return chunk


def _sse(lines: Iterator[str]) -> Iterator[tuple[int, str, str]]:
    """Parse Server-Sent Events into (id, event, decoded data)."""
    seq, event, data = -1, "message", ""
    for line in lines:
        if not line:
            if event == "end" or data:
                yield seq, event, json.loads(data) if data and event != "end" else ""
            seq, event, data = -1, "message", ""
        elif line.startswith("id:"):
            seq = int(line[3:].strip())
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()


def _code(response: httpx.Response) -> str | None:
    try:
        error = response.json()["error"]
        return str(error["code"])
    except (ValueError, KeyError, TypeError):
        return None


def _decode(response: httpx.Response) -> Any:
    if response.status_code == 204:
        return None
    if response.is_success:
        try:
            return response.json()
        except ValueError as exc:
            raise ClientError(
                response.status_code, "bad_response", "hub sent a body that is not JSON"
            ) from exc
    try:
        error = response.json()["error"]
        code, message, details = str(error["code"]), str(error["message"]), error.get("details") or {}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        snippet = response.text[:200].strip() or response.reason_phrase
        raise ClientError(
            response.status_code, "http_error", f"hub answered {response.status_code}: {snippet}"
        ) from exc
    raise ClientError(response.status_code, code, message, details if isinstance(details, dict) else {})


def _parse(build: Callable[[Any], T], body: Any) -> T:
    """Build a result from a decoded body; a body of the wrong shape is a ``bad_response``."""
    try:
        return build(body)
    except (KeyError, TypeError, ValueError) as exc:
        raise ClientError(200, "bad_response", f"unexpected response from hub: {exc!r}") from exc


def _tokens(b: Any) -> Tokens:
    return Tokens(str(b["access_token"]), str(b["refresh_token"]), int(b["expires_in"]))


def _user(b: Any) -> User:
    return User(int(b["id"]), str(b["username"]), str(b["role"]), str(b["account"]))


def _balance(b: Any) -> Balance:
    return Balance(str(b["account"]), int(b["available"]), int(b["held"]))


def _transfer(b: Any) -> Transfer:
    return Transfer(
        id=int(b["id"]),
        kind=str(b["kind"]),
        source=b.get("from"),
        to=b.get("to"),
        amount_micro=int(b["amount"]),
        idempotency_key=b.get("idempotency_key"),
        created_at=float(b["created_at"]),
        replayed=bool(b.get("replayed", False)),
    )


def _page(b: Any) -> TransferPage:
    next_before = b.get("next_before")
    return TransferPage(
        [_transfer(t) for t in b["transfers"]], None if next_before is None else int(next_before)
    )


def _trial_balance(b: Any) -> TrialBalance:
    totals = {str(k): int(v) for k, v in b["totals_by_type"].items()}
    return TrialBalance(bool(b["balanced"]), int(b["total"]), list(b["accounts"]), totals)


def _health(b: Any) -> Health:
    latency = b.get("avg_latency_ms")
    return Health(
        status=str(b["status"]),
        version=str(b["version"]),
        online_miners=int(b.get("online_miners", 0)),
        avg_latency_ms=None if latency is None else float(latency),
        features=dict(b.get("features") or {}),
    )
