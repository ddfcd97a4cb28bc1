"""The services of one hub, wired once by ``main.build_hub`` and handed to every transport."""

from __future__ import annotations

from dataclasses import dataclass

from gpupool.config import HubSettings
from gpupool.core.ports import Clock
from gpupool.hub.auth import AuthService
from gpupool.hub.ledger import LedgerService
from gpupool.hub.metrics import HubMetrics
from gpupool.store.db import Database


@dataclass
class Hub:
    settings: HubSettings
    clock: Clock
    db: Database
    metrics: HubMetrics
    auth: AuthService
    ledger: LedgerService
    version: str

    async def start(self) -> str | None:
        """Migrate the schema and create the first admin; returns a generated admin password once."""
        await self.db.migrate()
        password = self.settings.admin_password.get_secret_value() if self.settings.admin_password else None
        return await self.auth.ensure_admin(password)

    async def stop(self) -> None:
        await self.db.dispose()
