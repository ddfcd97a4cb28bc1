"""The small node's side of delegation (SPEC §5): a session on the big node, polled for batches.

Only the round and the node's *public* key go to the big node; the batches come back unsigned and
the node signs each one itself before it goes to the hub (``pow/service.py``). A session that expired
(the big node ends them after 330 s) or that the big node forgot (restarted) is started again; network
errors and 5xx are for the caller to retry with backoff.
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

    async def open(self) -> None:
        body = {**self.pow_round.to_json(), "auth_token": self._token}
        data = await self._call("POST", f"{PREFIX}/start", json=body)
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
                f"{PREFIX}/batches/{self.session_id}",
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
                "POST", f"{PREFIX}/stop", json={"session_id": session_id, "auth_token": self._token}
            )
        except (GpupoolError, httpx.HTTPError) as exc:
            log.warning("could not stop delegation session %s: %s", session_id, exc)
        self.session_status = "stopped"

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            resp = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(f"big node unreachable: {exc!r}", code="delegation_unreachable") from exc
        if resp.status_code == 404 and "/batches/" in path:
            raise SessionGone(path)
        if resp.status_code >= 400:
            try:
                detail = str(resp.json().get("detail"))
            except ValueError:
                detail = resp.text[:200]
            if resp.status_code == 401:
                raise TokenInvalid(detail, code="invalid_auth_token")
            if resp.status_code == 422:
                raise InvalidInput(f"big node refused the round: {detail}", field="body")
            raise Unavailable(f"big node answered {resp.status_code}: {detail}", code="delegation_refused")
        result: dict[str, Any] = resp.json()
        return result


class SessionGone(Exception):
    """The big node no longer knows the session (it expired long ago, or the service restarted)."""
