"""Believe a signed request only after its signature, freshness and uniqueness check out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpupool import crypto
from gpupool.core.ports import Clock
from gpupool.errors import SignatureRejected
from gpupool.store.db import Database
from gpupool.store.registry_repo import RegistryRepo


class SignedRequests:
    """Verifies ``sig_event`` beside a body, then claims the event id so it is accepted once, ever."""

    def __init__(self, db: Database, clock: Clock, max_skew_s: int) -> None:
        self.db = db
        self.clock = clock
        self.max_skew_s = max_skew_s

    async def verify(self, body: Mapping[str, Any], kind: int, pubkey: str | None = None) -> dict[str, Any]:
        event = crypto.verify_signed_body(body, now=self.clock.now(), max_skew_s=self.max_skew_s, kind=kind)
        if pubkey is not None and event["pubkey"] != pubkey:
            raise SignatureRejected("event signed by another key", code="pubkey_mismatch")
        # An event older than the skew window is refused as stale, so it need not be remembered longer.
        expires_at = float(event["created_at"]) + 2 * self.max_skew_s

        async def claim(conn: Any) -> bool:
            return await RegistryRepo(conn).claim_event(str(event["id"]), expires_at)

        if not await self.db.run(claim):
            raise SignatureRejected("event already accepted once (replay)", code="replayed_event")
        return event
