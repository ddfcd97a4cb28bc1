"""Delegation sessions on the big node: start, drain on poll, stop, expire — time is a parameter.

A session runs one engine ``Generator`` for one small node's round; the big node holds only that node's
*public* key, so the batches it hands back carry no signature: the small node signs each one itself.

Sharing the GPUs. Every generator spreads over all local GPUs (one worker per GPU). Sessions generate
side by side, the GPUs time-shared between their workers, so every small node in a round gets a fair
share of the machine within the round's window (as the reference does). When a model is too big to be
held ``max_sessions`` times in GPU memory (``v2`` is ~35 GB in fp16), ``max_active`` caps the sessions
generating at once; the others wait, in status ``initializing``, first come first served, and start
as soon as a generating session stops or expires. A waiting session's 330 s run from its start request.

The manager is thread-safe (routes run in a thread pool) and never sleeps; ``sweep()`` expires and
forgets sessions against the injected clock and is called periodically by the app.
"""

from __future__ import annotations

import hmac
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpupool.core.poc_batch import Batch
from gpupool.errors import NotFound, RateLimited, TokenInvalid
from gpupool.pow.rounds import BatchGenerator, PowRound

log = logging.getLogger("gpupool.delegation")

ACTIVE = ("initializing", "generating")
INVALID_TOKEN = "Invalid auth token"
GeneratorFactory = Callable[[PowRound], BatchGenerator]


@dataclass
class Session:
    session_id: str
    pow_round: PowRound
    created_at: float
    generator: BatchGenerator | None = None
    ended: str | None = None  # "stopped" | "expired" once ended by a request or the clock
    ended_at: float | None = None
    pending: list[Batch] = field(default_factory=list)
    total_generated: int = 0
    gpu_count: int = 0
    error: str | None = None

    @property
    def status(self) -> str:
        if self.ended is not None:
            return self.ended
        if self.error is not None:
            return "error"
        if self.generator is None:
            return "initializing"  # waiting for a generating slot
        status = str(self.generator.stats().status)
        return status if status in ("initializing", "generating", "stopped", "error") else "error"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


class SessionManager:
    """All sessions of one delegation service; ``clock`` returns seconds (``time.time`` in production)."""

    def __init__(
        self,
        token: str,
        factory: GeneratorFactory,
        clock: Callable[[], float],
        *,
        max_sessions: int = 10,
        max_active: int | None = None,
        ttl_s: float = 330.0,
        retain_s: float = 120.0,
    ) -> None:
        self._token = token.encode()
        self._factory = factory
        self._clock = clock
        self.max_sessions = max_sessions
        self.max_active = max_active or max_sessions
        self.ttl_s = ttl_s
        self.retain_s = retain_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.RLock()

    # -- auth ------------------------------------------------------------------------------------------
    def check_token(self, given: str | None) -> None:
        """Constant-time comparison; a missing token is as wrong as a bad one."""
        if not hmac.compare_digest((given or "").encode(), self._token):
            raise TokenInvalid(INVALID_TOKEN, code="invalid_auth_token")

    # -- requests --------------------------------------------------------------------------------------
    def start(self, pow_round: PowRound) -> Session:
        """A new session, generating at once when a slot is free; RateLimited (429) over the limit."""
        to_stop = self.sweep()
        with self._lock:
            live = [s for s in self._sessions.values() if s.active]
            if len(live) >= self.max_sessions:
                raise RateLimited(
                    f"Maximum number of sessions reached ({self.max_sessions})",
                    retry_after_s=int(self.ttl_s),
                    code="too_many_sessions",
                )
            session = Session(str(uuid.uuid4()), pow_round, self._clock())
            self._sessions[session.session_id] = session
        _stop_all(to_stop)
        self._fill_slots()
        log.info(
            "delegation session %s for %s… (block %s, node %s/%s): %s",
            session.session_id,
            pow_round.public_key[:12],
            pow_round.block_height,
            pow_round.node_id,
            pow_round.node_count,
            session.status,
        )
        return session

    def poll(self, session_id: str) -> tuple[Session, list[Batch]]:
        """The batches generated since the last poll (they are handed out once) and the session."""
        with self._lock:
            session = self._get(session_id)
            self._pull(session)
            batches, session.pending = session.pending, []
            return session, batches

    def stop(self, session_id: str) -> Session:
        with self._lock:
            session = self._get(session_id)
            generator = self._end(session, "stopped") if session.ended is None else None
        _stop_all([generator] if generator else [])
        self._fill_slots()
        with self._lock:
            self._pull(session)  # what the workers finished before stopping is still the node's
        return session

    def status(self) -> dict[str, Any]:
        now = self._clock()
        with self._lock:
            sessions = list(self._sessions.values())
            for s in sessions:
                self._pull(s)
            return {
                "total_sessions": len(sessions),
                "active_sessions": sum(1 for s in sessions if s.active),
                "max_sessions": self.max_sessions,
                "sessions": {
                    s.session_id: {
                        "status": s.status,
                        "node_id": s.pow_round.node_id,
                        "gpu_count": s.gpu_count,
                        "total_generated": s.total_generated,
                        "created_at": s.created_at,
                        "age_seconds": round(now - s.created_at, 3),
                    }
                    for s in sessions
                },
            }

    # -- time ------------------------------------------------------------------------------------------
    def sweep(self) -> list[BatchGenerator]:
        """Expire sessions past their TTL, forget ended ones past retention; returns generators to stop.

        Stopping waits for worker processes, so it happens outside the lock; ``sweep_and_stop`` does both.
        """
        now = self._clock()
        to_stop: list[BatchGenerator] = []
        with self._lock:
            for session in list(self._sessions.values()):
                if session.ended is None and now - session.created_at >= self.ttl_s:
                    self._pull(session)
                    generator = self._end(session, "expired")
                    if generator is not None:
                        to_stop.append(generator)
                    log.info("delegation session %s expired after %.0f s", session.session_id, self.ttl_s)
                if session.ended is None and session.status == "error":
                    self._pull(session)
                    generator = self._end(session, "error")
                    if generator is not None:
                        to_stop.append(generator)
                if session.ended_at is not None and now - session.ended_at >= self.retain_s:
                    del self._sessions[session.session_id]
        return to_stop

    def sweep_and_stop(self) -> None:
        _stop_all(self.sweep())
        self._fill_slots()

    def close(self) -> None:
        """Stop every session (service shutdown)."""
        with self._lock:
            generators = [
                g for s in self._sessions.values() if s.ended is None and (g := self._end(s, "stopped"))
            ]
        _stop_all(generators)

    # -- internals -------------------------------------------------------------------------------------
    def _get(self, session_id: str) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise NotFound("Session not found", code="session_not_found")
        return session

    def _pull(self, session: Session) -> None:
        if session.generator is None:
            return
        try:
            fresh = session.generator.drain()
        except Exception as exc:  # a dead worker must not take the service down
            session.error = session.error or f"{type(exc).__name__}: {exc}"
            return
        session.pending.extend(fresh)
        session.total_generated += len(fresh)

    def _end(self, session: Session, how: str) -> BatchGenerator | None:
        """Mark ``session`` ended; its generator (if it ever got one) is returned to be stopped."""
        session.ended = how
        session.ended_at = self._clock()
        return session.generator

    def _fill_slots(self) -> None:
        """Start waiting sessions, oldest first, while fewer than ``max_active`` generate."""
        while True:
            with self._lock:
                running = sum(
                    1 for s in self._sessions.values() if s.generator is not None and s.ended is None
                )
                waiting = sorted(
                    (
                        s
                        for s in self._sessions.values()
                        if s.generator is None and s.status == "initializing"
                    ),
                    key=lambda s: s.created_at,
                )
                if running >= self.max_active or not waiting:
                    return
                session = waiting[0]
                try:
                    session.generator = self._factory(session.pow_round)
                    session.gpu_count = int(session.generator.gpu_count)
                    session.generator.start()
                except Exception as exc:
                    session.error = f"{type(exc).__name__}: {exc}"
                    log.error("delegation session %s failed to start: %s", session.session_id, session.error)


def _stop_all(generators: list[BatchGenerator]) -> None:
    for generator in generators:
        try:
            generator.stop()
        except Exception as exc:
            log.warning("a generator did not stop cleanly: %s", exc)
