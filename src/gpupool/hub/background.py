"""The hub's own loops (write-behind flush, lease expiry, pruning), started and stopped with it.

A job that fails is logged and counted, and runs again at its next tick: one bad flush must not stop
heartbeats from being written for the rest of the hub's life.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._jobs: list[tuple[str, float, Callable[[], Awaitable[Any]]]] = []
        self._triggered: list[tuple[str, asyncio.Event, float, Callable[[], Awaitable[Any]]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.last_run = Gauge(
            "poolhub_job_last_run_timestamp", "When a job last finished", ["job"], registry=registry
        )
        self.duration = Gauge(
            "poolhub_job_last_duration_seconds", "How long its last run took", ["job"], registry=registry
        )
        self.errors = Counter("poolhub_job_errors_total", "Runs that raised", ["job"], registry=registry)

    def every(self, interval_s: float, name: str, job: Callable[[], Awaitable[Any]]) -> None:
        self._jobs.append((name, interval_s, job))

    def when(
        self, event: asyncio.Event, max_wait_s: float, name: str, job: Callable[[], Awaitable[Any]]
    ) -> None:
        """Run ``job`` as soon as ``event`` is set (and at least every ``max_wait_s``)."""
        self._triggered.append((name, event, max_wait_s, job))

    @property
    def started(self) -> bool:
        return bool(self._tasks)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(*job), name=f"job:{job[0]}") for job in self._jobs]
        self._tasks += [
            asyncio.create_task(self._event_loop(*job), name=f"job:{job[0]}") for job in self._triggered
        ]

    async def _event_loop(
        self, name: str, event: asyncio.Event, max_wait_s: float, job: Callable[[], Awaitable[Any]]
    ) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), max_wait_s)
            event.clear()
            await self.run_once(name, job)

    async def run_once(self, name: str, job: Callable[[], Awaitable[Any]]) -> None:
        started = time.perf_counter()
        try:
            await job()
        except Exception:
            self.errors.labels(name).inc()
            log.exception("background job %s failed; it will run again at its next tick", name)
        finally:
            self.duration.labels(name).set(time.perf_counter() - started)
            self.last_run.labels(name).set(time.time())

    async def _loop(self, name: str, interval_s: float, job: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.run_once(name, job)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
