"""Matchmaking and feedback over the hot registry (SPEC §3.3).

A match reads only memory. Feedback moves a node's trust and latency estimate by the rule in
``core/trust.py``, and only for a node that this hub actually offered for that job, once per
(job, node): a node cannot vouch for itself (it holds no coordinator credentials), and a coordinator
cannot replay one good outcome into a high score.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.core import matching, trust
from gpupool.core.ports import Clock
from gpupool.errors import NotFound
from gpupool.hub.live import LiveRegistry
from gpupool.hub.metrics import HubMetrics
from gpupool.store.db import Database
from gpupool.store.registry_repo import RegistryRepo

FEEDBACK_MEMORY_S = 7 * 86400
RECENT_MATCHES = 4096


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    miner_id: str
    trust: float
    latency_ms: float
    applied: bool


class MatchService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        live: LiveRegistry,
        metrics: HubMetrics,
        remember_jobs: int = 100_000,
    ) -> None:
        self.db = db
        self.clock = clock
        self.live = live
        self.metrics = metrics
        self.remember_jobs = remember_jobs
        self._offered: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._feedback_lock = asyncio.Lock()  # read-modify-write of trust: one outcome at a time
        self.recent_latency_ms: deque[float] = deque(maxlen=RECENT_MATCHES)  # the SLA view's window

    def match(
        self, job_id: str, req: matching.Requirements, hints: matching.Hints, top_k: int
    ) -> matching.MatchResult:
        started = time.perf_counter()
        result = self.live.table.match(req, hints, top_k)
        elapsed_s = time.perf_counter() - started
        self.metrics.match_latency.observe(elapsed_s * 1000.0)
        self.metrics.match_requests.inc()
        self.metrics.match_latency_seconds.observe(elapsed_s)
        self.recent_latency_ms.append(elapsed_s * 1000.0)
        self.metrics.matches.labels("matched" if result.candidates else "empty").inc()
        offered = self._offered.get(job_id, frozenset()) | {c.miner_id for c in result.candidates}
        self._offered[job_id] = offered
        self._offered.move_to_end(job_id)
        while len(self._offered) > self.remember_jobs:
            self._offered.popitem(last=False)
        return result

    async def feedback(
        self, job_id: str, miner_id: str, outcome: str, latency_ms: float | None
    ) -> FeedbackResult:
        """Apply one outcome; a repeated (job, node) report is answered but moves nothing."""
        if miner_id not in self._offered.get(job_id, frozenset()):
            raise NotFound(f"{miner_id} was not offered for job {job_id} by this hub", code="unknown_match")
        async with self._feedback_lock:
            return await self._apply(job_id, miner_id, outcome, latency_ms)

    async def _apply(
        self, job_id: str, miner_id: str, outcome: str, latency_ms: float | None
    ) -> FeedbackResult:
        node = self.live.nodes.get(miner_id)
        if node is None:
            raise NotFound(f"no live miner {miner_id}")
        key = hashlib.sha256(f"feedback\0{job_id}\0{miner_id}".encode()).hexdigest()
        current_trust = node.record.trust
        current_latency = node.record.latency_ms
        if current_latency is None:
            current_latency = trust.INITIAL_LATENCY_MS
        new_trust, new_latency = trust.update(current_trust, current_latency, outcome, latency_ms)
        expires_at = self.clock.now() + FEEDBACK_MEMORY_S

        async def work(conn: AsyncConnection) -> bool:
            repo = RegistryRepo(conn)
            if not await repo.claim_event(key, expires_at):
                return False
            await repo.set_trust(miner_id, new_trust, new_latency)
            return True

        if not await self.db.run(work):
            return FeedbackResult(miner_id, current_trust, current_latency, applied=False)
        self.live.update_trust(miner_id, new_trust, new_latency)
        return FeedbackResult(miner_id, new_trust, new_latency, applied=True)
