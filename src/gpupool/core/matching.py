"""Matchmaking: hard filter, weighted score, top-K, explain (SPEC §3.3), vectorised over the registry.

Every node is a row of numpy columns, so a match is a handful of array operations whatever the pool's
size. Filters apply in the order of ``REASONS``; a node filtered out is counted once, under the first
reason it fails. Terms of the score, each in [0, 1]:

    cap_fit  the share of the node's GPU memory (or GPUs) the job needs: a right-sized node scores
             1, an 8-GPU node for a 1-GPU job ~0.125; 1 when the job asks for no GPU resources
    price    1 for the cheapest candidate, 0 for the dearest (linear between; 1 when all equal)
    latency  the same over the latency estimates
    trust    the node's trust (``core/trust.py``)
    load     1 - queue_len / max_parallel

Ties are broken by miner id. ``eta_ms`` = latency estimate * (1 + queue length). ``match_reference``
is the same rules as a plain loop: the tests hold the two to the same answers and the benchmark
measures one against the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from gpupool.errors import InvalidInput

MAX_GPUS = 16  # GPUs kept per node for the VRAM filter (the largest ones)
REASONS = (
    "offline",
    "gpu_count",
    "vram",
    "ram",
    "accel",
    "capabilities",
    "tags",
    "region",
    "price",
    "busy",
    "deadline",
)
TERMS = ("cap", "price", "latency", "trust", "load")


@dataclass(frozen=True, slots=True)
class Weights:
    cap: float = 0.4
    price: float = 0.2
    latency: float = 0.2
    trust: float = 0.15
    load: float = 0.05

    @classmethod
    def parse(cls, text: str) -> Weights:
        """``"cap:0.4,price:0.2,…"``; a missing term keeps its default; unknown or negative: refused."""
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, raw = part.partition(":")
            name = name.strip()
            try:
                value = float(raw)
            except ValueError:
                value = -1.0
            if not sep or name not in TERMS or not value >= 0:
                raise InvalidInput(
                    f"bad weight {part!r}: expected name:number with name in {TERMS}", field="DEFAULT_WEIGHTS"
                )
            values[name] = value
        return cls(**values)


DEFAULT_WEIGHTS = Weights()


@dataclass(frozen=True, slots=True)
class NodeSpec:
    miner_id: str
    addr: str
    proto: str
    gpu_vram_gb: list[float]
    gpu_names: list[str]
    ram_gb: float
    region: str | None
    price: int
    max_parallel: int
    tags: list[str]
    capabilities: list[str]
    trust: float
    latency_ms: float | None


@dataclass(frozen=True, slots=True)
class Requirements:
    task: str | None = None
    min_vram_gb: float | None = None
    min_ram_gb: float | None = None
    gpu_count: int | None = None
    accel: list[str] = field(default_factory=list)
    tags_any: list[str] = field(default_factory=list)
    capabilities_any: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Hints:
    region: str | None = None
    max_price: int | None = None
    deadline_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    miner_id: str
    addr: str
    proto: str
    score: float
    eta_ms: float
    price: int


@dataclass(frozen=True, slots=True)
class MatchResult:
    candidates: list[Candidate]
    explain: str
    rejected: dict[str, int]


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as the reference matcher sees it: its spec and its live state."""

    spec: NodeSpec
    online: bool
    queue_len: int


DEFAULT_LATENCY_MS = 1000.0
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class NodeTable:
    """The registry as numpy columns; slots of removed nodes are reused, capacity doubles when full."""

    used: BoolArray
    online: BoolArray
    n_gpus: npt.NDArray[np.int64]
    vram: FloatArray
    vram_total: FloatArray
    ram: FloatArray
    price: npt.NDArray[np.int64]
    max_parallel: npt.NDArray[np.int64]
    queue_len: npt.NDArray[np.int64]
    trust: FloatArray
    latency: FloatArray
    last_seen: FloatArray

    def __init__(self, weights: Weights = DEFAULT_WEIGHTS, capacity: int = 64) -> None:
        self.weights = weights
        self._slot: dict[str, int] = {}
        self._free: list[int] = []
        self._specs: list[NodeSpec | None] = []
        self._masks: dict[tuple[str, str], BoolArray] = {}
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        old = len(self._specs)
        grow = capacity - old

        def extend(name: str, fill: float | bool | int, dtype: type, shape: tuple[int, ...] = ()) -> None:
            new: npt.NDArray[Any] = np.full((grow, *shape), fill, dtype=dtype)
            setattr(self, name, np.concatenate([getattr(self, name), new]) if old else new)

        extend("used", False, np.bool_)
        extend("online", False, np.bool_)
        extend("n_gpus", 0, np.int64)
        extend("vram", 0.0, np.float64, (MAX_GPUS,))
        extend("vram_total", 0.0, np.float64)
        extend("ram", 0.0, np.float64)
        extend("price", 0, np.int64)
        extend("max_parallel", 1, np.int64)
        extend("queue_len", 0, np.int64)
        extend("trust", 0.0, np.float64)
        extend("latency", DEFAULT_LATENCY_MS, np.float64)
        extend("last_seen", 0.0, np.float64)
        self._specs.extend([None] * grow)

    def __len__(self) -> int:
        return len(self._slot)

    # -- updates -----------------------------------------------------------------------------------
    def upsert(self, spec: NodeSpec) -> None:
        slot = self._slot.get(spec.miner_id)
        if slot is None:
            if not self._free and len(self._slot) == len(self._specs):
                self._alloc(2 * len(self._specs))
                self._free.extend(range(len(self._specs) - 1, len(self._slot) - 1, -1))
            slot = self._free.pop() if self._free else len(self._slot)
            self._slot[spec.miner_id] = slot
            self.queue_len[slot] = 0
        vram = sorted(spec.gpu_vram_gb, reverse=True)[:MAX_GPUS]
        self._specs[slot] = spec
        self.used[slot] = True
        self.n_gpus[slot] = len(spec.gpu_vram_gb)
        self.vram[slot] = 0.0
        self.vram[slot, : len(vram)] = vram
        self.vram_total[slot] = float(sum(spec.gpu_vram_gb))
        self.ram[slot] = spec.ram_gb
        self.price[slot] = spec.price
        self.max_parallel[slot] = max(1, spec.max_parallel)
        self.trust[slot] = spec.trust
        self.latency[slot] = spec.latency_ms if spec.latency_ms is not None else DEFAULT_LATENCY_MS
        self._masks.clear()

    def remove(self, miner_id: str) -> None:
        slot = self._slot.pop(miner_id, None)
        if slot is None:
            return
        self._specs[slot] = None
        self.used[slot] = self.online[slot] = False
        self._free.append(slot)
        self._masks.clear()

    def heartbeat(self, miner_id: str, now: float, *, queue_len: int) -> None:
        slot = self._slot.get(miner_id)
        if slot is not None:
            self.online[slot] = True
            self.last_seen[slot] = now
            self.queue_len[slot] = queue_len

    def set_online(self, miner_id: str, online: bool) -> None:
        if (slot := self._slot.get(miner_id)) is not None:
            self.online[slot] = online

    def set_trust(self, miner_id: str, trust: float, latency_ms: float | None) -> None:
        if (slot := self._slot.get(miner_id)) is not None:
            self.trust[slot] = trust
            self.latency[slot] = latency_ms if latency_ms is not None else DEFAULT_LATENCY_MS

    def set_price(self, miner_id: str, price: int) -> None:
        if (slot := self._slot.get(miner_id)) is not None:
            self.price[slot] = price

    def views(self) -> list[NodeView]:
        """Every node with its live state (for the reference matcher and for inspection)."""
        out = []
        for slot in self._slot.values():
            spec = self._specs[slot]
            assert spec is not None
            live = replace(
                spec,
                price=int(self.price[slot]),
                trust=float(self.trust[slot]),
                latency_ms=float(self.latency[slot]),
            )
            out.append(NodeView(live, bool(self.online[slot]), int(self.queue_len[slot])))
        return out

    # -- matching ----------------------------------------------------------------------------------
    def _mask(self, kind: str, values: Sequence[str]) -> BoolArray:
        """Nodes having any of ``values`` (tags, capabilities) or a GPU whose name contains one (accel)."""
        key = (kind, "\0".join(sorted(values)))
        mask = self._masks.get(key)
        if mask is None:
            mask = np.zeros(len(self._specs), dtype=np.bool_)
            for slot, spec in enumerate(self._specs):
                mask[slot] = spec is not None and _has_any(kind, spec, values)
            self._masks[key] = mask
        return mask

    def match(self, req: Requirements, hints: Hints, top_k: int) -> MatchResult:
        alive = self.used.copy()
        total = int(alive.sum())
        rejected: dict[str, int] = {}
        for reason, passes in self._filters(req, hints):
            failing = alive & ~passes
            count = int(failing.sum())
            if count:
                rejected[reason] = count
                alive &= passes
        slots = np.nonzero(alive)[0]
        if not len(slots):
            return MatchResult([], _explain_none(total, rejected), rejected)
        terms = self._terms(slots, req)
        return _rank(
            slots,
            terms,
            self.weights,
            top_k,
            self._specs,
            self.latency,
            self.queue_len,
            self.price,
            total,
            rejected,
        )

    def _filters(self, req: Requirements, hints: Hints) -> Iterable[tuple[str, BoolArray]]:
        yield "offline", self.online
        needed = req.gpu_count or (1 if req.min_vram_gb else 0)
        if req.gpu_count:
            yield "gpu_count", self.n_gpus >= req.gpu_count
        if req.min_vram_gb:
            yield "vram", (self.vram >= req.min_vram_gb).sum(axis=1) >= max(needed, 1)
        if req.min_ram_gb:
            yield "ram", self.ram >= req.min_ram_gb
        if req.accel:
            yield "accel", self._mask("accel", req.accel)
        wanted = list(req.capabilities_any) + ([req.task] if req.task else [])
        if wanted:
            yield "capabilities", self._mask("capabilities", wanted)
        if req.tags_any:
            yield "tags", self._mask("tags", req.tags_any)
        if hints.region:
            yield "region", self._mask("region", [hints.region])
        if hints.max_price is not None:
            yield "price", self.price <= hints.max_price
        yield "busy", self.queue_len < self.max_parallel
        if hints.deadline_ms is not None:
            yield "deadline", self.latency * (1 + self.queue_len) <= hints.deadline_ms

    def _terms(self, slots: npt.NDArray[np.intp], req: Requirements) -> dict[str, FloatArray]:
        needed_gpus = req.gpu_count or (1 if req.min_vram_gb else 0)
        if req.min_vram_gb:
            cap = np.minimum(
                1.0, req.min_vram_gb * max(needed_gpus, 1) / np.maximum(self.vram_total[slots], 1e-9)
            )
        elif needed_gpus:
            cap = np.minimum(1.0, needed_gpus / np.maximum(self.n_gpus[slots], 1)).astype(np.float64)
        else:
            cap = np.ones(len(slots))
        return {
            "cap": cap,
            "price": _low_is_good(self.price[slots].astype(np.float64)),
            "latency": _low_is_good(self.latency[slots]),
            "trust": self.trust[slots].astype(np.float64),
            "load": 1.0 - self.queue_len[slots] / self.max_parallel[slots],
        }


def _low_is_good(values: FloatArray) -> FloatArray:
    low, high = float(values.min()), float(values.max())
    if high - low <= 0:
        return np.ones(len(values))
    return (high - values) / (high - low)


def _rank(
    slots: npt.NDArray[np.intp],
    terms: dict[str, FloatArray],
    weights: Weights,
    top_k: int,
    specs: list[NodeSpec | None],
    latency: FloatArray,
    queue_len: npt.NDArray[np.int64],
    price: npt.NDArray[np.int64],
    total: int,
    rejected: dict[str, int],
) -> MatchResult:
    score = sum((getattr(weights, t) * terms[t] for t in TERMS), start=np.zeros(len(slots)))
    order = np.arange(len(slots))
    if len(slots) > top_k:
        kth = np.partition(score, len(slots) - top_k)[len(slots) - top_k]
        order = np.nonzero(score >= kth)[0]  # every tie at the boundary, so the id tie-break is exact
    ids = [_spec(specs, int(s)).miner_id for s in slots[order]]
    ranked = sorted(range(len(order)), key=lambda i: (-score[order[i]], ids[i]))[:top_k]
    candidates = []
    for i in ranked:
        slot = int(slots[order[i]])
        spec = specs[slot]
        assert spec is not None
        candidates.append(
            Candidate(
                spec.miner_id,
                spec.addr,
                spec.proto,
                round(float(score[order[i]]), 6),
                float(latency[slot] * (1 + queue_len[slot])),
                int(price[slot]),
            )
        )
    best = int(order[ranked[0]])
    parts = " + ".join(f"{t} {getattr(weights, t):g}*{float(terms[t][best]):.2f}" for t in TERMS)
    explain = f"best {candidates[0].miner_id} score={candidates[0].score:.3f} = {parts}; " + _fit_text(
        len(slots), total, rejected
    )
    return MatchResult(candidates, explain, rejected)


def _fit_text(fit: int, total: int, rejected: dict[str, int]) -> str:
    text = f"{fit} of {total} nodes fit"
    if rejected:
        text += "; filtered: " + ", ".join(f"{r} {rejected[r]}" for r in REASONS if r in rejected)
    return text


def _explain_none(total: int, rejected: dict[str, int]) -> str:
    if total == 0:
        return "no node fits: no nodes are registered"
    return "no node fits: " + _fit_text(0, total, rejected)


def _has_any(kind: str, spec: NodeSpec, values: Sequence[str]) -> bool:
    if kind == "accel":
        names = [n.lower() for n in spec.gpu_names]
        return any((v.lower() == "cpu" and not names) or any(v.lower() in n for n in names) for v in values)
    if kind == "region":
        return spec.region in values
    have = spec.tags if kind == "tags" else spec.capabilities
    return any(v in have for v in values)


# -- the same rules as a loop --------------------------------------------------------------------------


def match_reference(
    nodes: Sequence[NodeView], req: Requirements, hints: Hints, top_k: int, weights: Weights = DEFAULT_WEIGHTS
) -> MatchResult:
    """``NodeTable.match`` written as a plain loop over nodes (the tests' oracle, the benchmark's peer)."""
    rejected: dict[str, int] = {}
    fit: list[NodeView] = []
    for view in nodes:
        reason = _first_failure(view, req, hints)
        if reason is None:
            fit.append(view)
        else:
            rejected[reason] = rejected.get(reason, 0) + 1
    if not fit:
        return MatchResult([], _explain_none(len(nodes), rejected), rejected)
    return _rank_reference(fit, req, weights, top_k, len(nodes), rejected)


def _first_failure(view: NodeView, req: Requirements, hints: Hints) -> str | None:
    s = view.spec
    needed = req.gpu_count or (1 if req.min_vram_gb else 0)
    latency = s.latency_ms if s.latency_ms is not None else DEFAULT_LATENCY_MS
    vram = sorted(s.gpu_vram_gb, reverse=True)[:MAX_GPUS]
    wanted = list(req.capabilities_any) + ([req.task] if req.task else [])
    checks = (
        ("offline", view.online),
        ("gpu_count", not req.gpu_count or len(s.gpu_vram_gb) >= req.gpu_count),
        ("vram", not req.min_vram_gb or sum(v >= req.min_vram_gb for v in vram) >= max(needed, 1)),
        ("ram", not req.min_ram_gb or s.ram_gb >= req.min_ram_gb),
        ("accel", not req.accel or _has_any("accel", s, req.accel)),
        ("capabilities", not wanted or _has_any("capabilities", s, wanted)),
        ("tags", not req.tags_any or _has_any("tags", s, req.tags_any)),
        ("region", not hints.region or s.region == hints.region),
        ("price", hints.max_price is None or s.price <= hints.max_price),
        ("busy", view.queue_len < max(1, s.max_parallel)),
        ("deadline", hints.deadline_ms is None or latency * (1 + view.queue_len) <= hints.deadline_ms),
    )
    return next((reason for reason, ok in checks if not ok), None)


def _rank_reference(
    fit: list[NodeView], req: Requirements, weights: Weights, top_k: int, total: int, rejected: dict[str, int]
) -> MatchResult:
    needed = req.gpu_count or (1 if req.min_vram_gb else 0)
    prices = [float(v.spec.price) for v in fit]
    lats = [v.spec.latency_ms if v.spec.latency_ms is not None else DEFAULT_LATENCY_MS for v in fit]

    def low_good(values: list[float], x: float) -> float:
        lo, hi = min(values), max(values)
        return 1.0 if hi - lo <= 0 else (hi - x) / (hi - lo)

    scored = []
    for v, price, lat in zip(fit, prices, lats, strict=True):
        s = v.spec
        if req.min_vram_gb:
            cap = min(1.0, req.min_vram_gb * max(needed, 1) / max(sum(s.gpu_vram_gb), 1e-9))
        elif needed:
            cap = min(1.0, needed / max(len(s.gpu_vram_gb), 1))
        else:
            cap = 1.0
        terms = {
            "cap": cap,
            "price": low_good(prices, price),
            "latency": low_good(lats, lat),
            "trust": s.trust,
            "load": 1.0 - v.queue_len / max(1, s.max_parallel),
        }
        score = sum(getattr(weights, t) * terms[t] for t in TERMS)
        scored.append((score, s.miner_id, v, terms, lat))
    scored.sort(key=lambda x: (-x[0], x[1]))
    best = scored[:top_k]
    candidates = [
        Candidate(
            v.spec.miner_id, v.spec.addr, v.spec.proto, round(score, 6), lat * (1 + v.queue_len), v.spec.price
        )
        for score, _, v, _, lat in best
    ]
    parts = " + ".join(f"{t} {getattr(weights, t):g}*{best[0][3][t]:.2f}" for t in TERMS)
    explain = f"best {candidates[0].miner_id} score={candidates[0].score:.3f} = {parts}; " + _fit_text(
        len(fit), total, rejected
    )
    return MatchResult(candidates, explain, rejected)


def _spec(specs: list[NodeSpec | None], slot: int) -> NodeSpec:
    spec = specs[slot]
    assert spec is not None, f"slot {slot} is empty"
    return spec
