"""The services of one hub, wired once by ``main.build_hub`` and handed to every transport."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.config import HubSettings
from gpupool.core.ports import Clock
from gpupool.hub.auth import AuthService
from gpupool.hub.background import Periodic
from gpupool.hub.channels import NodeChannels
from gpupool.hub.dialout import DialOut
from gpupool.hub.history import PoolHistory
from gpupool.hub.ledger import LedgerService
from gpupool.hub.live import LiveRegistry
from gpupool.hub.matchmaking import MatchService
from gpupool.hub.metrics import HubMetrics
from gpupool.hub.poc import PocService
from gpupool.hub.registry import RegistryService
from gpupool.hub.rewards import RewardService
from gpupool.hub.sessions import SessionService
from gpupool.hub.tasks import TaskService
from gpupool.hub.throttle import Budget
from gpupool.hub.users import UserAdmin
from gpupool.store.db import Database
from gpupool.store.registry_repo import RegistryRepo


@dataclass
class Hub:
    settings: HubSettings
    clock: Clock
    db: Database
    metrics: HubMetrics
    auth: AuthService
    user_admin: UserAdmin
    ledger: LedgerService
    live: LiveRegistry
    sessions: SessionService
    registry: RegistryService
    matchmaking: MatchService
    rate_limit: Budget
    channels: NodeChannels
    tasks: TaskService
    rewards: RewardService
    poc: PocService
    periodic: Periodic
    version: str
    history: PoolHistory
    dialout: DialOut  # nodes the hub dials (HiveMind's workers)
    started_at: float = 0.0  # this process's start, for uptime in the SLA view

    async def start(self) -> str | None:
        """Migrate, create the first admin, reload live nodes and start the loops.

        Returns the generated admin password on the very first start, once.
        """
        self.started_at = self.started_at or self.clock.now()
        await self.db.migrate()
        password = self.settings.admin_password.get_secret_value() if self.settings.admin_password else None
        generated = await self.auth.ensure_admin(password)
        await self.live.load(self.clock.now(), self.settings.heartbeat_grace_sec)
        await self.tasks.load()
        if not self.periodic.started:  # a second start (tests, reloads) must not double the loops
            self.periodic.when(self.tasks.wakeup, 0.5, "dispatch", self.tasks.dispatch_once)
            self.periodic.every(self.settings.flush_interval_sec, "flush", self.live.flush)
            self.periodic.every(self.history.interval_s, "history", self.history.sample)
            self.periodic.every(min(1.0, self.settings.heartbeat_grace_sec / 4), "expire", self.expire)
            self.periodic.every(
                self.settings.maintenance_interval_sec,
                "maintenance",
                self._singleton("maintenance", self.settings.maintenance_interval_sec, self.maintain),
            )
            if self.settings.reward_auto_distribute:
                self.periodic.every(
                    self.settings.reward_epoch_sec,
                    "rewards",
                    self._singleton("rewards", self.settings.reward_epoch_sec, self.rewards.distribute_due),
                )
            self.periodic.start()
        return generated

    async def expire(self) -> list[str]:
        """Take nodes silent past the grace period offline (flushed later); requeue their tasks."""
        stale = self.live.expire(self.clock.now(), self.settings.heartbeat_grace_sec)
        if stale:
            await self.tasks.lose_nodes(stale)
        return stale

    def _singleton(
        self, name: str, interval_s: float, job: Callable[[], Awaitable[Any]]
    ) -> Callable[[], Awaitable[None]]:
        """Run ``job`` on one replica per interval: the first to claim the interval's slot runs it."""

        async def once() -> None:
            now = self.clock.now()
            slot = f"job:{name}:{int(now // interval_s)}"

            async def claim(conn: AsyncConnection) -> bool:
                return await RegistryRepo(conn).claim_event(slot, now + 2 * interval_s)

            if await self.db.run(claim):
                await job()

        return once

    async def maintain(self) -> None:
        """The periodic pass (SPEC §3.5): prune, close due PoC rounds, refresh pool statistics."""
        await self.prune()
        self.metrics.miners_online.set(self.live.online_count())
        counts: dict[str, int] = {}
        for view in self.tasks.views.values():
            counts[view.state.value] = counts.get(view.state.value, 0) + 1
        for state in ("queued", "assigned", "running"):
            self.metrics.tasks_live.labels(state).set(counts.get(state, 0))
        await self.poc.close_due()  # last: validating a big round takes a while

    async def prune(self) -> tuple[int, int]:
        """Forget expired sessions and replay-cache entries too old to be accepted anyway."""
        now = self.clock.now()
        self.sessions.prune(now)

        async def work(conn: AsyncConnection) -> tuple[int, int]:
            repo = RegistryRepo(conn)
            return await repo.prune_sessions(now), await repo.prune_events(now)

        return await self.db.run(work)

    async def stop(self) -> None:
        await self.periodic.stop()
        await self.live.flush()  # a clean stop loses no telemetry at all
        await self.db.dispose()
