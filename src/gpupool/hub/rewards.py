"""Contributions and epoch rewards (SPEC §3.5), paid through the ledger with hub-signed receipts.

Contributions are recorded by the hub itself (from an accepted task result, or by an admin with a
reason, which is kept), never on a node's word. Closing an epoch issues ``BASE_REWARD`` into the reward
pool and pays every owner whose due reached ``MIN_SETTLEMENT`` in one balanced posting (its credit
entries are the payouts); dues below the minimum stay in the pool, carried to the next epoch. The hub
signs the epoch once, over the Merkle root of its payouts (``receipts.py``): a payout's receipt is that
signed root plus its inclusion proof, so an epoch of 10^5 payouts costs one signature, not 10^5. The
epoch row is claimed in the same transaction, so distributing an epoch twice pays once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool import crypto, receipts
from gpupool.core import ledger, rewards
from gpupool.core.ledger import Entry, Posting, PostingKind
from gpupool.core.model import Principal
from gpupool.core.ports import Clock
from gpupool.errors import Forbidden, InvalidInput, NotFound
from gpupool.hub.postings import post_in
from gpupool.receipts import EpochReceipts
from gpupool.store.db import Database
from gpupool.store.ledger_repo import LedgerRepo
from gpupool.store.registry_repo import MinerRecord, RegistryRepo
from gpupool.store.rewards_repo import Payout, RewardsRepo


@dataclass(frozen=True, slots=True)
class RewardConfig:
    epoch_sec: int
    base_reward_micro: int
    min_settlement_micro: int
    count_reported: bool = False  # contributions nodes record themselves count for rewards (GGB)


_SEALED_CACHE = 8
"""Closed epochs whose Merkle trees are kept in memory to hand out receipts without a rebuild."""


@dataclass(frozen=True, slots=True)
class EpochResult:
    epoch: int
    already_distributed: bool
    emission_micro: int
    payouts: list[Payout]
    sealed: EpochReceipts | None = None
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent in each step of the close (aggregate, split, posting, seal, carry)."""

    def receipt(self, index: int) -> dict[str, Any]:
        """The receipt of ``payouts[index]`` (payouts are in the tree's order)."""
        if self.sealed is None:
            raise IndexError("this result paid nothing")
        return self.sealed.receipt(index)


class _Laps:
    """Wall time of each step of a close, for the bench and the logs (not the injected clock: a duration)."""

    def __init__(self, out: dict[str, float]) -> None:
        self.out = out
        self.last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.out[name] = now - self.last
        self.last = now


def contribution_from_usage(
    node: MinerRecord, ref: str, usage: dict[str, Any], start: float, end: float, epoch: int
) -> dict[str, Any]:
    """The contribution of one accepted task, scored from what the node measured and signed."""
    gpus = node.spec.get("gpus") or []
    gpu_name = str(gpus[0]["name"]) if gpus else None
    gpu_seconds = float(usage.get("gpu_seconds") or 0.0) if gpus else 0.0
    cpu_seconds = float(usage.get("cpu_seconds") or 0.0)
    return {
        "node_id": node.miner_id,
        "owner": node.owner,
        "source": "task",
        "ref": ref,
        "epoch": epoch,
        "start_timestamp": start,
        "end_timestamp": end,
        "duration_seconds": float(usage.get("duration_sec") or max(0.0, end - start)),
        "avg_gpu_usage_percent": usage.get("gpu_util_avg"),
        "gpu_memory_used_mb": usage.get("vram_peak_mb"),
        "avg_cpu_usage_percent": None,
        "memory_used_mb": usage.get("ram_peak_mb"),
        "samples_processed": 0,
        "compute_score": rewards.usage_score(gpu_seconds, gpu_name, cpu_seconds),
        "recorded_by": "hub",
        "reason": None,
    }


class RewardService:
    def __init__(self, db: Database, clock: Clock, hub_key: crypto.KeyPair, config: RewardConfig) -> None:
        self.db = db
        self.clock = clock
        self.hub_key = hub_key
        self.config = config
        self._sealed: OrderedDict[int, EpochReceipts] = OrderedDict()

    def epoch_of(self, ts: float) -> int:
        return rewards.epoch_of(ts, self.config.epoch_sec)

    def epoch_now(self) -> int:
        return self.epoch_of(self.clock.now())

    async def distribute_due(self) -> None:
        """The scheduled job: close the last finished epoch unless it was closed already."""
        if self.epoch_now() > 0:
            await self.distribute(None)

    async def record_by_admin(self, admin: Principal, node_id: str, compute_score: int, reason: str) -> bool:
        """An admin's correction, kept with who made it and why."""
        if not admin.is_admin:
            raise Forbidden("only an admin can record a contribution by hand")
        if compute_score <= 0:
            raise InvalidInput("compute_score must be positive", field="compute_score")
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> bool:
            node = await RegistryRepo(conn).miner(node_id)
            if node is None:
                raise NotFound(f"no miner {node_id}")
            values = {
                **contribution_from_usage(
                    node, f"admin:{int(now * 1000)}:{node_id}", {}, now, now, self.epoch_now()
                ),
                "source": "admin",
                "compute_score": compute_score,
                "recorded_by": admin.username,
                "reason": reason,
            }
            return await RewardsRepo(conn).add_contribution(values)

        return await self.db.run(work)

    async def record_reported(self, node_id: str, ref: str, values: dict[str, Any]) -> bool:
        """A contribution a node records itself (GGB's ``/api/contributions/record``): stored and shown,
        flagged ``reported``; it counts for rewards only with ``GPUPOOL_REWARDS_COUNT_REPORTED=true``.
        Once per (node, ref): a re-sent record is not counted twice."""
        now = self.clock.now()

        async def work(conn: AsyncConnection) -> bool:
            node = await RegistryRepo(conn).miner(node_id)
            if node is None:
                raise NotFound(f"no miner {node_id}")
            row = {
                **contribution_from_usage(node, f"{node_id}:{ref}"[:64], {}, now, now, self.epoch_now()),
                **values,
                "source": "reported",
                "recorded_by": f"node:{node_id}"[:64],
            }
            return await RewardsRepo(conn).add_contribution(row)

        return await self.db.run(work)

    async def distribute(self, epoch: int | None = None) -> EpochResult:
        """Close ``epoch`` (default: the last finished one) and pay it; a second call pays nothing."""
        target = self.epoch_now() - 1 if epoch is None else epoch
        if target < 0 or target >= self.epoch_now():
            raise InvalidInput(f"epoch {target} is not finished yet", field="epoch")
        now = self.clock.now()
        emission = self.config.base_reward_micro
        timings: dict[str, float] = {}

        async def work(conn: AsyncConnection) -> tuple[bool, list[Payout], EpochReceipts | None]:
            timings.clear()
            lap = _Laps(timings)
            repo = RewardsRepo(conn)
            if not await repo.claim_epoch(target, emission, now):
                return True, [], None
            scores = await repo.scores_for_epoch(target, include_reported=self.config.count_reported)
            carried_in = await repo.carried()
            lap("aggregate")
            plan = rewards.distribute_epoch(emission, scores, carried_in, self.config.min_settlement_micro)
            plan.check()
            lap("split")
            if emission:
                issue = Posting(
                    PostingKind.REWARD,
                    (Entry(ledger.ISSUANCE, -emission), Entry(ledger.REWARD_POOL, emission)),
                )
                await post_in(conn, issue, f"reward-emission:{target}", "hub", now)
            amounts = plan.payouts_micro
            sealed, posting_id = None, None
            if amounts:
                owners = sorted(amounts)
                legs = [Entry(ledger.REWARD_POOL, -plan.paid_micro)] + [Entry(o, amounts[o]) for o in owners]
                posting_id = await post_in(
                    conn,
                    Posting(PostingKind.REWARD, tuple(legs)),
                    f"reward:{target}",
                    "hub",
                    now,
                    open_as=ledger.AccountType.OWNER.value,
                )
                lap("posting")
                sealed = receipts.seal_epoch(
                    self.hub_key, target, list(amounts.items()), emission_micro=emission, created_at=int(now)
                )
                lap("seal")
            await repo.replace_carried(plan.carried_micro)
            await repo.set_paid(target, plan.paid_micro, posting_id, sealed.root_event if sealed else None)
            lap("carry")
            paid = (
                [Payout(target, o, a, now) for o, a in zip(sealed.owners, sealed.amounts, strict=True)]
                if sealed
                else []
            )
            return False, paid, sealed

        already, paid, sealed = await self.db.run(work)
        if sealed is not None:
            self._remember(sealed)
        return EpochResult(target, already, emission if not already else 0, paid, sealed, dict(timings))

    def _remember(self, sealed: EpochReceipts) -> None:
        self._sealed[sealed.epoch] = sealed
        self._sealed.move_to_end(sealed.epoch)
        while len(self._sealed) > _SEALED_CACHE:
            self._sealed.popitem(last=False)

    async def _epoch_receipts(self, conn: AsyncConnection, epoch: int) -> EpochReceipts:
        """A closed epoch's tree (cached; rebuilt from its ledger entries and checked against its root)."""
        if epoch in self._sealed:
            return self._sealed[epoch]
        repo = RewardsRepo(conn)
        root_event = await repo.root_event(epoch)
        if root_event is None:
            raise NotFound(f"epoch {epoch} paid nobody: it has no receipts")
        sealed = receipts.reopen_epoch(epoch, await repo.epoch_payouts(epoch), root_event)
        self._remember(sealed)
        return sealed

    async def balance(self, address: str) -> dict[str, Any]:
        owner = crypto.normalize_owner_address(address, field="address")
        async with self.db.read() as conn:
            balances = await LedgerRepo(conn).balances([owner])
            repo = RewardsRepo(conn)
            carried = (await repo.carried()).get(owner, 0)
            history = await repo.payouts_of(owner)
            shown = []
            for p in history:
                sealed = await self._epoch_receipts(conn, p.epoch)
                shown.append(
                    {
                        "epoch": p.epoch,
                        "amount": p.amount_micro,
                        "status": p.status,
                        "transaction_signature": sealed.signature,
                        "receipt": sealed.receipt(sealed.index_of(owner)),
                    }
                )
        return {
            "wallet_address": owner,
            "balance": balances.get(owner, 0),
            "pending_rewards": carried,
            "total_rewards_distributed": sum(p.amount_micro for p in history),
            "last_updated_at": max((p.created_at for p in history), default=None),
            "payouts": shown,
        }

    async def stats(self, node_id: str | None, owner: str | None) -> dict[str, Any]:
        if not node_id and not owner:
            raise InvalidInput("give node_id or owner", field="node_id")
        owner = crypto.normalize_owner_address(owner, field="owner") if owner else None
        async with self.db.read() as conn:
            stats = await RewardsRepo(conn).stats(node_id, owner)
        return {"node_id": node_id, "owner": owner, **stats}
