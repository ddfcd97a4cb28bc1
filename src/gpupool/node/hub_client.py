"""The node's one client of the hub, with one retry policy for every request the node makes.

``decide`` is the policy, pure so it is tested as a table: a network error or a 5xx is retried after a
full-jitter exponential backoff; a 429 waits what its ``Retry-After`` says (bounded); a 401 means the
session is gone, so the node registers again (once per request) and resends; any other answer is the
caller's. Each caller sets only its budget (``attempts``, ``deadline_s``): registration at start-up
tries once and fails loudly, a task's result is retried for minutes.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

SESSION_HEADER = "X-Session-Token"
API_KEY_HEADER = "X-Api-Key"
DEFAULT_ATTEMPTS = 4


class Backoff:
    """Full-jitter exponential backoff: 0.5 s, 1 s, 2 s … capped, each wait uniform in [cap/2, cap]."""

    def __init__(self, base_s: float = 0.5, max_s: float = 30.0) -> None:
        self.base_s, self.max_s, self.attempt = base_s, max_s, 0

    def next(self) -> float:
        cap = min(self.max_s, self.base_s * (2**self.attempt))
        self.attempt += 1
        return random.uniform(cap / 2, cap)

    def reset(self) -> None:
        self.attempt = 0


@dataclass(frozen=True, slots=True)
class Retry:
    wait_s: float


@dataclass(frozen=True, slots=True)
class Reauthenticate:
    pass


Decision = Retry | Reauthenticate | None  # None: the answer is final, the caller reads it


def decide(status: int | None, retry_after: str | None, backoff: Backoff, now: float) -> Decision:
    """What to do after an answer with ``status`` (None: no answer, a network error)."""
    if status is None or status >= 500:
        return Retry(backoff.next())
    if status == 429:
        return Retry(retry_after_s(retry_after, now, fallback_s=backoff.next(), max_s=backoff.max_s * 10))
    if status == 401:
        return Reauthenticate()
    return None


def retry_after_s(header: str | None, now: float, *, fallback_s: float, max_s: float) -> float:
    """``Retry-After`` in seconds (a number or an HTTP date), in [0, max_s]; ``fallback_s`` if unreadable."""
    if header is None:
        return fallback_s
    try:
        wait = float(header.strip())
    except ValueError:
        try:
            wait = email.utils.parsedate_to_datetime(header).timestamp() - now
        except (TypeError, ValueError):
            return fallback_s
    if wait != wait:  # NaN
        return fallback_s
    return min(max(wait, 0.0), max_s)


class HubClient:
    """Requests to one hub; the session token and API key are added, the policy applied."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 15.0,
        backoff_max_s: float = 30.0,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, transport=transport)
        self.backoff_max_s = backoff_max_s
        self.api_key = api_key
        self.sleep = sleep
        self.token: Callable[[], str | None] = lambda: None
        self.reauthenticate: Callable[[], Awaitable[None]] | None = None

    async def __aenter__(self) -> HubClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: Callable[[], AsyncIterator[bytes]] | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        attempts: int | None = DEFAULT_ATTEMPTS,
        deadline_s: float | None = None,
        stream: bool = False,
        timeout_s: float | None = None,
        reauthenticate: bool = True,
    ) -> httpx.Response:
        """Send until the answer is final or the budget is spent; then the last answer, or the last
        network error raised. ``content`` may be a factory, so a streamed body can be sent again;
        ``stream``: the caller reads the body and closes the response; ``reauthenticate`` False for
        the registration's own requests (a 401 there is final)."""
        backoff = Backoff(max_s=self.backoff_max_s)
        deadline = time.monotonic() + deadline_s if deadline_s is not None else None
        reauthenticated, tries = not reauthenticate, 0
        while True:
            tries += 1
            token = self.token()
            body = content() if callable(content) else content
            request = self.http.build_request(
                method,
                path,
                json=json,
                content=body,
                headers=self._headers(token, headers),
                timeout=timeout_s if timeout_s is not None else httpx.USE_CLIENT_DEFAULT,
            )
            try:
                response: httpx.Response | None = await self.http.send(request, stream=stream)
                error: httpx.TransportError | None = None
            except httpx.TransportError as exc:
                response, error = None, exc
            status = response.status_code if response is not None else None
            retry_after = response.headers.get("Retry-After") if response is not None else None
            step = decide(status, retry_after, backoff, time.time())
            if step is None or (
                isinstance(step, Reauthenticate) and not self._can_reauthenticate(reauthenticated)
            ):
                return _final(response, error)
            if isinstance(step, Reauthenticate):
                reauthenticated = True
                await _close(response)
                if self.token() == token and self.reauthenticate is not None:
                    await self.reauthenticate()  # not already done by another request meanwhile
                continue
            spent = attempts is not None and tries >= attempts
            if spent or (deadline is not None and time.monotonic() + step.wait_s > deadline):
                return _final(response, error)
            await _close(response)
            await self.sleep(step.wait_s)

    def _can_reauthenticate(self, done_already: bool) -> bool:
        return self.reauthenticate is not None and not done_already

    def _headers(self, token: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        if token:
            headers[SESSION_HEADER] = token
        if self.api_key:
            headers[API_KEY_HEADER] = self.api_key
        return headers


def _final(response: httpx.Response | None, error: httpx.TransportError | None) -> httpx.Response:
    if response is None:
        assert error is not None
        raise error
    return response


async def _close(response: httpx.Response | None) -> None:
    if response is not None:
        await response.aclose()
