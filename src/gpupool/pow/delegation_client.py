"""The small node's side of delegation (SPEC §5): a session on the big node, polled for batches.

Only the round and the node's *public* key go to the big node; the batches come back unsigned and
the node signs each one itself before it goes to the hub (``pow/service.py``). A session that expired
(the big node ends them after 330 s) or that the big node forgot (restarted) is started again; network
errors and 5xx are for the caller to retry with backoff.

The fork's big node (SPEC §8.3) serves ``/start``, ``/batches/{id}``, ``/stop`` at its root, reads the
token only from ``?auth_token=`` and answers every refusal with 400 and a ``detail``; ours serves both path
forms. So the token goes both ways (query and Bearer), the service is looked for under
``/api/v1/delegation`` first and at the root when that is not there, and a 400 is read by its detail.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from gpupool.core.poc_batch import Batch
from gpupool.errors import GpupoolError, InvalidInput, TokenInvalid, Unavailable
from gpupool.pow.rounds import PowRound

log = logging.getLogger("gpupool.pow")
PREFIX = "/api/v1/delegation"
PREFIXES = (PREFIX, "")


class DelegationClient:
    """One round's session on a big node; ``fetch()`` returns the batches since the last call."""

    def __init__(self, http: httpx.AsyncClient, token: str, pow_round: PowRound) -> None:
        self._http = http  # base_url is DELEGATION_URL
        self._token = token
        self.pow_round = pow_round
        self.session_id: str | None = None
        self.session_status = "initializing"
        self.gpu_count: int | None = None
        self.sessions_started = 0
        self.total_generated = 0
        self.remote: dict[str, Any] = {}
        self.prefix: str | None = None  # found by the first start: PREFIX, or "" for the fork's root form

    async def open(self) -> None:
        body = {**self.pow_round.to_json(), "auth_token": self._token}
        data = await self._start(body)
        self.session_id = str(data["session_id"])
        self.session_status = str(data.get("status", "initializing"))
        self.gpu_count = int(data.get("gpu_count") or 0)
        self.sessions_started += 1
        log.info(
            "delegation session %s started on the big node (%s GPUs): %s",
            self.session_id,
            self.gpu_count,
            data.get("message", ""),
        )

    async def fetch(self) -> list[Batch]:
        """New batches; opens a fresh session when there is none or the last one ended by expiry."""
        if self.session_id is None:
            await self.open()
        try:
            data = await self._call(
                "GET",
                f"{self.prefix or ''}/batches/{self.session_id}",
                params={"auth_token": self._token},
                headers={"Authorization": f"Bearer {self._token}"},
            )
        except SessionGone:
            log.warning("delegation session %s is unknown to the big node; starting another", self.session_id)
            self.session_id = None
            return []
        batches = [Batch.from_dict(b) for b in data.get("batches", [])]
        self.session_status = str(data.get("status", "unknown"))
        self.total_generated = int(data.get("total_batches_generated", 0))
        self.remote = {
            k: data[k] for k in ("nonces_per_s", "qualified_per_s", "nonces_computed") if k in data
        }
        if not data.get("session_active", False):
            log.info(
                "delegation session %s ended (%s); starting another", self.session_id, self.session_status
            )
            self.session_id = None  # the next fetch opens a new session; this one's last batches are in hand
        return batches

    async def close(self) -> None:
        if self.session_id is None:
            return
        session_id, self.session_id = self.session_id, None
        try:
            await self._call(
                "POST",
                f"{self.prefix or ''}/stop",
                json={"session_id": session_id, "auth_token": self._token},
                headers={"Authorization": f"Bearer {self._token}"},
            )
        except (GpupoolError, httpx.HTTPError) as exc:
            log.warning("could not stop delegation session %s: %s", session_id, exc)
        self.session_status = "stopped"

    async def _start(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST start under the known prefix, or find it: ours first, then the fork's root form."""
        tried = [self.prefix] if self.prefix is not None else list(PREFIXES)
        for prefix in tried:
            try:
                data = await self._call("POST", f"{prefix}/start", json=body)
            except RouteMissing:
                continue
            self.prefix = prefix
            return data
        raise Unavailable(
            "no delegation service at DELEGATION_URL (tried /api/v1/delegation/start and /start)",
            code="delegation_unreachable",
        )

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            resp = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(f"big node unreachable: {exc!r}", code="delegation_unreachable") from exc
        if resp.status_code >= 400:
            _raise_for(resp, path)
        result: dict[str, Any] = resp.json()
        return result


def _detail(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200]
    return str(data.get("detail")) if isinstance(data, dict) else resp.text[:200]


def _raise_for(resp: httpx.Response, path: str) -> None:
    """Our 401/404/422/429 and the fork's 400s (told apart by their ``detail``) as our errors."""
    status, detail = resp.status_code, _detail(resp)
    lowered = detail.lower()
    if status in (404, 405) and path.endswith("/start"):
        raise RouteMissing(path)
    if "/batches/" in path and (status == 404 or (status == 400 and "not found" in lowered)):
        raise SessionGone(path)
    if status == 401 or (status == 400 and "auth token" in lowered):
        raise TokenInvalid(detail, code="invalid_auth_token")
    if status == 422:
        raise InvalidInput(f"big node refused the round: {detail}", field="body")
    raise Unavailable(f"big node answered {status}: {detail}", code="delegation_refused")


class RouteMissing(Exception):
    """No start route under this prefix (the service is served under the other path form)."""


class SessionGone(Exception):
    """The big node no longer knows the session (it expired long ago, or the service restarted)."""
