"""Contributions → scores → epoch payouts, in integers so that every micro-unit is accounted for.

Score unit: one millisecond of H100 time (``SCORE_PER_H100_SECOND`` = 1000). A contribution's score is
what its work would have taken an H100, so a slow GPU earns less per second than a fast one and a CPU
node earns a small, honest amount. Scores are integers: sums over an epoch are exact and the same
contributions give the same payouts on every hub replica.

An epoch splits its emission among owners in proportion to their summed score (largest remainder, so
the shares add up to the emission exactly). An owner is paid once their due (carried + share) reaches
the minimum settlement; the rest is carried to the next epoch. Nothing is created or lost:
``sum(payouts) + sum(new carried) + unallocated == emission + sum(old carried)``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from gpupool.core import exact
from gpupool.errors import InvalidInput

SCORE_PER_H100_SECOND = 1000
"""Score units per second of H100 time: a score unit is one H100-millisecond."""


@dataclass(frozen=True, slots=True)
class GpuClass:
    """A GPU family and its throughput relative to an H100 SXM, in thousandths (H100 = 1000)."""

    family: str
    permille: int
    pattern: str


# Relative throughput = dense FP16/BF16 tensor throughput with FP32 accumulate from the vendor's
# datasheet, divided by the H100 SXM's (989 TFLOP/s), rounded to a round number and never up. H200 and
# GH200 have the H100's tensor cores and ~1.4x its memory bandwidth: a modest 10 % bonus, not 40 %.
# Matched against the upper-cased name with '-' and '_' read as spaces; the first match wins, so the
# specific names come before their families (H100 PCIe before H100, L40S before L40, A10G before A10).
GPU_CLASSES: tuple[GpuClass, ...] = (
    GpuClass("B200", 2000, r"\bB200\b"),
    GpuClass("GH200", 1100, r"\bGH200\b"),
    GpuClass("H200", 1100, r"\bH200\b"),
    GpuClass("H100 PCIe", 750, r"\bH100\b.*\bPCIE\b"),
    GpuClass("H100", 1000, r"\bH100\b"),
    GpuClass("H800", 1000, r"\bH800\b"),
    GpuClass("MI300X", 1000, r"\bMI300X\b"),
    GpuClass("A100", 300, r"\bA100\b"),
    GpuClass("A800", 300, r"\bA800\b"),
    GpuClass("L40S", 360, r"\bL40S\b"),
    GpuClass("RTX 6000 Ada", 360, r"\bRTX 6000 ADA\b"),
    GpuClass("L40", 180, r"\bL40\b"),
    GpuClass("RTX 5090", 210, r"\b5090\b"),
    GpuClass("RTX 4090", 165, r"\b4090\b"),
    GpuClass("RTX A6000", 150, r"\bA6000\b"),
    GpuClass("V100", 125, r"\bV100\b"),
    GpuClass("A10G", 70, r"\bA10G\b"),
    GpuClass("A10", 125, r"\bA10\b"),
    GpuClass("L4", 120, r"\bL4\b"),
    GpuClass("RTX 4080", 95, r"\b4080\b"),
    GpuClass("RTX 3090", 70, r"\b3090\b"),
    GpuClass("T4", 65, r"\bT4\b"),
)

UNKNOWN_GPU = GpuClass("unknown", 50, "")
"""An unrecognised GPU counts as slightly less than a T4: a new card is underpaid until it is listed,
never overpaid because its name looks like something faster."""

CPU_CORE_PERMILLE = 2
"""One CPU core-second counts as 0.002 H100-seconds (a 64-core server ≈ an eighth of an H100)."""

POC_UNITS_PER_VALID_NONCE = 36
"""Exchange rate for PoC batches, in H100-milliseconds per valid nonce. A ``v2`` nonce is one forward
pass of ~2.5 G parameters over 256 positions (≈1.3 TFLOP ≈ 1.8 ms on an H100 at ~700 TFLOP/s) and about
one nonce in twenty falls under the default ``r_target``, so a valid nonce stands for ≈36 ms of H100.
Hubs running another parameter set pass their own rate."""

_COMPILED = tuple((cls, re.compile(cls.pattern)) for cls in GPU_CLASSES)


@functools.cache  # a pool has a handful of GPU names; settlement asks for each result
def gpu_class(gpu_name: str) -> GpuClass:
    """The throughput class of a GPU by its reported name (NVML/nvidia-smi form), or ``UNKNOWN_GPU``."""
    normalised = gpu_name.upper().replace("-", " ").replace("_", " ")
    for cls, pattern in _COMPILED:
        if pattern.search(normalised):
            return cls
    return UNKNOWN_GPU


def _seconds(value: float, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{field} must be a finite number of seconds", field=field)
    if value < 0:
        raise InvalidInput(f"{field} must not be negative", field=field)
    return value


def _count(value: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field} must be an integer", field=field)
    if value < 0:
        raise InvalidInput(f"{field} must not be negative", field=field)
    return value


def gpu_score(gpu_seconds: float, gpu_name: str) -> int:
    """Score of ``gpu_seconds`` (summed over the GPUs used) on GPUs of this name, rounded down."""
    return exact.floor_mul(_seconds(gpu_seconds, "gpu_seconds"), gpu_class(gpu_name).permille)


def cpu_score(cpu_seconds: float, permille: int = CPU_CORE_PERMILLE) -> int:
    """Score of ``cpu_seconds`` (core-seconds) on a CPU node, rounded down."""
    return exact.floor_mul(_seconds(cpu_seconds, "cpu_seconds"), _count(permille, "permille"))


def poc_score(valid_nonces: int, units_per_nonce: int = POC_UNITS_PER_VALID_NONCE) -> int:
    """Score of a verified PoC batch from its number of unique valid nonces."""
    return _count(valid_nonces, "valid_nonces") * _count(units_per_nonce, "units_per_nonce")


def aggregate_scores(contribs: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Sum scores per owner; refuses a negative score (a plain dict: ~10^6 rows in a fraction of a second)."""
    totals: dict[str, int] = {}
    get = totals.get
    for owner, score in contribs:
        if score < 0:
            raise InvalidInput(f"score of {owner!r} is negative", field="score")
        totals[owner] = get(owner, 0) + score
    return totals


@dataclass(frozen=True, slots=True)
class EpochDistribution:
    """What one epoch pays: shares of the emission, payouts due now, and what is carried forward.

    ``unallocated_micro`` is emission nobody earned (an epoch with zero total score): it stays in the
    reward pool rather than being invented into anyone's balance.
    """

    emission_micro: int
    carried_in_micro: int
    shares_micro: dict[str, int]
    payouts_micro: dict[str, int]
    carried_micro: dict[str, int]
    unallocated_micro: int

    @property
    def paid_micro(self) -> int:
        return sum(self.payouts_micro.values())

    def is_conserved(self) -> bool:
        out = self.paid_micro + sum(self.carried_micro.values()) + self.unallocated_micro
        return (
            out == self.emission_micro + self.carried_in_micro
            and sum(self.shares_micro.values()) + self.unallocated_micro == self.emission_micro
        )

    def check(self) -> None:
        """Raise AssertionError when a micro-unit was created or lost (a guard for callers)."""
        if not self.is_conserved():
            raise AssertionError("epoch distribution does not conserve micro-units")


def _check_amounts(amounts: Mapping[str, int], field: str) -> int:
    values = amounts.values()
    # C-speed checks (map/min/sum): 10^5 owners validate in a few milliseconds.
    if values and (not set(map(type, values)) <= {int} or min(values) < 0):
        bad = next(o for o, v in amounts.items() if type(v) is not int or v < 0)
        raise InvalidInput(f"{field} of {bad!r} must be a non-negative integer", field=field)
    return sum(values)


_INT64_LIMIT = 2**63


def split_proportionally(amount_micro: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Split ``amount`` in proportion to ``weights`` by largest remainder, summing to ``amount`` exactly.

    Each share is within one micro-unit of ``amount * weight / total``; leftover micro-units go to the
    largest remainders, ties broken by key, so the result does not depend on the mapping's order.
    Zero-weight keys get nothing; the result is in key order. The total weight must be positive.
    """
    owners = sorted(owner for owner, weight in weights.items() if weight)
    total = sum(weights.values())
    if owners and total < _INT64_LIMIT and amount_micro * max(weights.values()) < _INT64_LIMIT:
        return _split_int64(amount_micro, owners, weights, total)
    return _split_bigint(amount_micro, owners, weights, total)


def _split_bigint(
    amount_micro: int, owners: list[str], weights: Mapping[str, int], total: int
) -> dict[str, int]:
    shares: dict[str, int] = {}
    remainders: list[int] = []
    for owner in owners:
        shares[owner], rest = divmod(amount_micro * weights[owner], total)
        remainders.append(rest)
    leftover = amount_micro - sum(shares.values())
    if leftover:
        # A stable sort over owners already in key order: equal remainders stay in owner-key order.
        ranked = sorted(range(len(owners)), key=remainders.__getitem__, reverse=True)
        for index in ranked[:leftover]:
            shares[owners[index]] += 1
    return shares


def _split_int64(
    amount_micro: int, owners: list[str], weights: Mapping[str, int], total: int
) -> dict[str, int]:
    """The same split vectorised, used when every ``amount * weight`` fits in int64 (exact, ~3x faster)."""
    products = np.fromiter((weights[o] for o in owners), dtype=np.int64, count=len(owners)) * amount_micro
    shares, remainders = np.divmod(products, total)
    leftover = amount_micro - int(shares.sum())
    shares[np.argsort(-remainders, kind="stable")[:leftover]] += 1
    return dict(zip(owners, shares.tolist(), strict=True))


def distribute_epoch(
    emission_micro: int,
    scores: Mapping[str, int],
    carried_micro: Mapping[str, int],
    min_settlement_micro: int,
) -> EpochDistribution:
    """Share one epoch's emission among owners by score, pay those whose due reaches the minimum.

    ``scores`` and ``carried_micro`` are keyed by owner address. An owner's due is what was carried to
    this epoch plus this epoch's share; a due of at least ``min_settlement_micro`` (and above zero) is
    paid in full, a smaller one is carried again.
    """
    _count(emission_micro, "emission_micro")
    _count(min_settlement_micro, "min_settlement_micro")
    total_score = _check_amounts(scores, "score")
    carried_in = _check_amounts(carried_micro, "carried_micro")

    if total_score == 0:
        shares: dict[str, int] = {}
        unallocated = emission_micro
    else:
        shares = split_proportionally(emission_micro, scores)
        unallocated = 0

    payouts: dict[str, int] = {}
    carried: dict[str, int] = {}
    dues = dict(shares)  # in key order already, so the sort below is nearly free
    for owner, amount in carried_micro.items():
        dues[owner] = dues.get(owner, 0) + amount
    for owner in sorted(dues):
        due = dues[owner]
        if due and due >= min_settlement_micro:
            payouts[owner] = due
        elif due:
            carried[owner] = due
    return EpochDistribution(
        emission_micro=emission_micro,
        carried_in_micro=carried_in,
        shares_micro=shares,
        payouts_micro=payouts,
        carried_micro=carried,
        unallocated_micro=unallocated,
    )


def epoch_bounds(epoch: int, epoch_sec: int, genesis: float = 0) -> tuple[float, float]:
    """``[start, end)`` of an epoch in seconds since the Unix epoch."""
    _count(epoch, "epoch")
    if isinstance(epoch_sec, bool) or not isinstance(epoch_sec, int) or epoch_sec <= 0:
        raise InvalidInput("epoch_sec must be a positive integer", field="epoch_sec")
    return genesis + epoch * epoch_sec, genesis + (epoch + 1) * epoch_sec


def epoch_of(ts: float, epoch_sec: int, genesis: float = 0) -> int:
    """The epoch holding ``ts``: the one whose ``epoch_bounds`` satisfy ``start <= ts < end``."""
    if not math.isfinite(ts) or ts < genesis:
        raise InvalidInput("timestamp must be finite and not before genesis", field="ts")
    epoch = math.floor((ts - genesis) / epoch_sec) if epoch_sec > 0 else 0
    start, end = epoch_bounds(epoch, epoch_sec, genesis)
    # Float division can land one epoch off right at a boundary; settle it against the bounds themselves.
    if ts < start:
        epoch -= 1
    elif ts >= end:
        epoch += 1
    return epoch
