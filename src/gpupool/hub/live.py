"""The hot registry: who is online right now, kept in memory and written behind to the database.

Heartbeats only touch memory (a dict update and a row of the matching table), so they never wait on
a disk write; ``flush`` writes what changed in one batched statement every ``flush_interval``. A crash
loses at most the telemetry of that last interval; registrations and sessions are written through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.core import matching
from gpupool.hub.metrics import HubMetrics
from gpupool.store.db import Database
from gpupool.store.registry_repo import HotUpdate, MinerRecord, RegistryRepo


@dataclass(frozen=True, slots=True)
class GpuSpec:
    index: int
    uuid: str
    name: str
    vram_gb: float
    compute_capability: str


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """What a node declares at registration (an account-bound node has no ``pubkey``)."""

    pubkey: str | None
    owner: str
    cpu_cores: int
    ram_gb: float
    price_micro_per_ksec: int
    max_parallel: int
    gpus: tuple[GpuSpec, ...] = ()
    miner_id: str | None = None
    addr: str | None = None
    proto: str = "http"
    region: str | None = None
    tags: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu_cores": self.cpu_cores,
            "ram_gb": self.ram_gb,
            "price_micro_per_ksec": self.price_micro_per_ksec,
            "max_parallel": self.max_parallel,
            "gpus": [_gpu_json(g) for g in self.gpus],
            "addr": self.addr,
            "proto": self.proto,
            "region": self.region,
            "tags": list(self.tags),
            "capabilities": list(self.capabilities),
        }

    @classmethod
    def from_record(cls, record: MinerRecord) -> NodeSpec:
        s = record.spec
        return cls(
            pubkey=record.pubkey,
            owner=record.owner,
            miner_id=record.miner_id,
            cpu_cores=int(s.get("cpu_cores", 0)),
            ram_gb=float(s.get("ram_gb", 0)),
            price_micro_per_ksec=spec_price_micro(s),
            max_parallel=int(s.get("max_parallel", 1)),
            gpus=tuple(GpuSpec(**g) for g in s.get("gpus", [])),
            addr=s.get("addr"),
            proto=s.get("proto") or "http",
            region=s.get("region"),
            tags=tuple(s.get("tags", [])),
            capabilities=tuple(s.get("capabilities", [])),
        )


def spec_price_micro(spec: dict[str, Any]) -> int:
    """A stored spec's price in micro-units per 1000 GPU-seconds."""
    return int(spec.get("price_micro_per_ksec", 0))


def _gpu_json(gpu: GpuSpec) -> dict[str, Any]:
    return {
        "index": gpu.index,
        "uuid": gpu.uuid,
        "name": gpu.name,
        "vram_gb": gpu.vram_gb,
        "compute_capability": gpu.compute_capability,
    }


@dataclass(slots=True)
class LiveNode:
    record: MinerRecord
    last_seen: float
    online: bool = True
    queue_len: int = 0
    telemetry: dict[str, Any] | None = None
    sessions: set[str] = field(default_factory=set)


class LiveRegistry:
    def __init__(self, db: Database, metrics: HubMetrics, weights: matching.Weights) -> None:
        self.db = db
        self.metrics = metrics
        self.table = matching.NodeTable(weights)
        self.nodes: dict[str, LiveNode] = {}
        self._dirty: set[str] = set()
        self._session_renewals: dict[str, float] = {}
        self._flush_lock = asyncio.Lock()
        # Counted when scraped: a count per change was O(n) per registration, O(n²) in a restart storm.
        metrics.miners_online.set_function(self.online_count)

    async def load(self, now: float, grace_s: float) -> None:
        """Rebuild the hot registry from the database after a start (nodes still inside the grace period)."""
        async with self.db.read() as conn:
            records = await RegistryRepo(conn).all_miners()
        for record in records:
            if record.status == "online" and now - record.last_seen <= grace_s:
                self.upsert(record, record.last_seen)

    def upsert(self, record: MinerRecord, now: float) -> None:
        spec = NodeSpec.from_record(record)
        node = self.nodes.get(record.miner_id)
        if node is None:
            node = self.nodes[record.miner_id] = LiveNode(record=record, last_seen=now)
        else:
            node.record, node.last_seen, node.online = record, now, True
        self.table.upsert(_table_spec(spec, record))
        self.table.heartbeat(record.miner_id, now, queue_len=node.queue_len)

    def heartbeat(self, miner_id: str, now: float, queue_len: int, telemetry: dict[str, Any] | None) -> None:
        node = self.nodes.get(miner_id)
        if node is None:
            return
        node.last_seen, node.queue_len = now, queue_len
        if telemetry is not None:
            node.telemetry = telemetry
        if not node.online:
            node.online = True
            self.table.set_online(miner_id, True)
        self.table.heartbeat(miner_id, now, queue_len=queue_len)
        self._dirty.add(miner_id)
        self.metrics.heartbeats.inc()

    def renew_session(self, token_hash: str, expires_at: float) -> None:
        self._session_renewals[token_hash] = expires_at

    def set_offline(self, miner_id: str) -> None:
        node = self.nodes.get(miner_id)
        if node is not None and node.online:
            node.online = False
            self.table.set_online(miner_id, False)
            self._dirty.add(miner_id)

    def expire(self, now: float, grace_s: float) -> list[str]:
        """Mark nodes silent for more than ``grace_s`` offline; returns their ids."""
        stale = [m for m, n in self.nodes.items() if n.online and now - n.last_seen > grace_s]
        for miner_id in stale:
            self.set_offline(miner_id)
        return stale

    def update_trust(self, miner_id: str, trust: float, latency_ms: float | None) -> None:
        node = self.nodes.get(miner_id)
        if node is None:
            return
        node.record = replace(node.record, trust=trust, latency_ms=latency_ms)
        self.table.set_trust(miner_id, trust, latency_ms)

    def set_price(self, miner_id: str, price_micro_per_ksec: int) -> None:
        node = self.nodes.get(miner_id)
        if node is None:
            return
        node.record = replace(
            node.record, spec={**node.record.spec, "price_micro_per_ksec": price_micro_per_ksec}
        )
        self.table.set_price(miner_id, price_micro_per_ksec)

    def set_poc_weight(self, miner_id: str, weight: int) -> None:
        """The node's weight from its last validated PoC round (already written to the database)."""
        node = self.nodes.get(miner_id)
        if node is not None:
            node.record = replace(node.record, poc_weight=weight)

    def online_count(self) -> int:
        return sum(1 for n in self.nodes.values() if n.online)

    def avg_latency_ms(self) -> float | None:
        values = [
            n.record.latency_ms for n in self.nodes.values() if n.online and n.record.latency_ms is not None
        ]
        return sum(values) / len(values) if values else None

    def overlay(self, record: MinerRecord) -> MinerRecord:
        """The stored record with the newest in-memory state laid over it."""
        node = self.nodes.get(record.miner_id)
        if node is None:
            return record
        return replace(
            record,
            status="online" if node.online else "offline",
            last_seen=node.last_seen,
            telemetry=node.telemetry if node.telemetry is not None else record.telemetry,
            trust=node.record.trust,
            latency_ms=node.record.latency_ms,
        )

    def drain(self) -> tuple[list[HotUpdate], list[tuple[str, float]]]:
        updates = []
        for miner_id in self._dirty:
            node = self.nodes.get(miner_id)
            if node is not None:
                status = "online" if node.online else "offline"
                updates.append(HotUpdate(miner_id, status, node.last_seen, node.telemetry))
        renewals = list(self._session_renewals.items())
        self._dirty.clear()
        self._session_renewals.clear()
        return updates, renewals

    async def flush(self) -> int:
        """Write what heartbeats changed since the last flush; returns the number of nodes written."""
        async with self._flush_lock:
            updates, renewals = self.drain()
            if not updates and not renewals:
                return 0

            async def work(conn: AsyncConnection) -> None:
                repo = RegistryRepo(conn)
                await repo.write_hot(updates)
                await repo.renew_sessions(renewals)

            await self.db.run(work)
            return len(updates)


def _table_spec(spec: NodeSpec, record: MinerRecord) -> matching.NodeSpec:
    gpus: Sequence[GpuSpec] = spec.gpus
    return matching.NodeSpec(
        miner_id=record.miner_id,
        addr=spec.addr or "",
        proto=spec.proto,
        gpu_vram_gb=[g.vram_gb for g in gpus],
        gpu_names=[g.name for g in gpus],
        ram_gb=spec.ram_gb,
        region=spec.region,
        price=spec.price_micro_per_ksec,
        max_parallel=spec.max_parallel,
        tags=list(spec.tags),
        capabilities=list(spec.capabilities),
        trust=record.trust,
        latency_ms=record.latency_ms,
    )
