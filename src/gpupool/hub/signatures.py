"""Believe a signed request only after its signature, freshness and uniqueness check out.

``check`` verifies the event (no I/O); ``claim`` records its id inside the caller's own transaction,
so a request refused for another reason rolls the claim back with everything else, while a request
that went through can never be replayed (on any replica, after any restart).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpupool import crypto
from gpupool.core.ports import Clock
from gpupool.errors import SignatureRejected
from gpupool.store.registry_repo import RegistryRepo


class SignedRequests:
    def __init__(self, clock: Clock, max_skew_s: int) -> None:
        self.clock = clock
        self.max_skew_s = max_skew_s

    def check(self, body: Mapping[str, Any], kind: int, pubkey: str | None = None) -> dict[str, Any]:
        event = crypto.verify_signed_body(body, now=self.clock.now(), max_skew_s=self.max_skew_s, kind=kind)
        if pubkey is not None and event["pubkey"] != pubkey:
            raise SignatureRejected("event signed by another key", code="pubkey_mismatch")
        return event

    def expires_at(self, event: Mapping[str, Any]) -> float:
        """An event older than the skew window is refused as stale, so it need not be remembered longer."""
        return float(event["created_at"]) + 2 * self.max_skew_s

    async def claim(self, repo: RegistryRepo, event: Mapping[str, Any]) -> None:
        if not await repo.claim_event(str(event["id"]), self.expires_at(event)):
            raise replay_refusal()


def replay_refusal() -> SignatureRejected:
    """What a request whose event id was accepted before is told (the same on every path)."""
    return SignatureRejected("event already accepted once (replay)", code="replayed_event")
