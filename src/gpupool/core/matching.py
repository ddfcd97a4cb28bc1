"""Matchmaking: hard filter, weighted score, top-K, explain (SPEC §3.3), vectorised over the registry.

Every node is a row of numpy columns (freed rows are reused, capacity doubles when full), so a match
is a handful of array operations whatever the pool's size. Tags, capabilities, regions and GPU names
are kept as inverted indices (value -> rows); a query turns each value it names into a boolean mask,
cached and updated in place as nodes come and go.

Hard filters, in this order; a node filtered out is counted once in ``rejected``, under the first
reason it fails (the order of ``REASONS``):

    offline       not online
    gpu_count     fewer GPUs than ``gpu_count`` (0 or None: no requirement)
    vram          fewer than ``gpu_count`` (default 1) GPUs with at least ``min_vram_gb`` each
    ram           less RAM than ``min_ram_gb``
    accel         offers none of ``accel``: a runtime (``cuda``, ``rocm``, ``cpu`` = a GPU-less node, see
                  ``runtimes``) or, for any other word, a GPU whose name contains it (case-insensitive)
    capabilities  none of ``capabilities_any`` (``task`` is a hint only: it never filters, seed 002)
    tags          none of ``tags_any``
    region        region neither equal to the ``region`` hint nor under it on a ``-`` boundary
                  (``eu`` takes ``eu-west-1``, not ``europe``)
    price         price above the ``max_price`` hint
    busy          ``queue_len >= max_parallel``
    deadline      ``eta_ms`` above the ``deadline_ms`` hint

Score = sum of weight * term over these terms, each in [0, 1]:

    cap      how little of the node the job leaves idle: needed VRAM (min_vram_gb * GPUs needed) over
             the node's total VRAM, or GPUs needed over the node's GPUs; 1 when the job asks for neither
    price    1 for the cheapest candidate, 0 for the dearest, linear between (1 when all are equal)
    latency  the same over the candidates' latency estimates
    trust    the node's trust (``core/trust.py``)
    load     1 - queue_len / max_parallel

Top-K is ``np.argpartition`` plus a sort of the K; equal scores rank by miner id (a tie at the cut is
settled with ``heapq`` over just the tied rows, so a pool of identical nodes costs O(ties)). Each
candidate carries its own explain string (its terms), as seed 002's pool hub returns.
``eta_ms`` = latency estimate * (1 + queue_len): each job queued ahead is assumed to take about one
round trip. ``match_reference`` is the same rules as a plain loop: the tests hold both to the same
answers and ``bench/match.py`` measures one against the other.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from gpupool.core.trust import INITIAL_LATENCY_MS
from gpupool.errors import InvalidInput

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
DEFAULT_LATENCY_MS = INITIAL_LATENCY_MS  # a node with no latency estimate yet
DENSE_CACHE = 256  # query values whose boolean masks are kept, per index
RUNTIMES = ("cuda", "rocm", "cpu")
_NVIDIA = re.compile(
    r"nvidia|geforce|tesla|quadro|titan|\b[rg]tx\b|\b[ahlvptk]\d{1,3}s?\b|\bgh200\b|\bgb200\b"
)
_AMD = re.compile(r"\bamd\b|radeon|instinct|\bmi\d{2,3}x?\b")

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Weights:
    cap: float = 0.4
    price: float = 0.2
    latency: float = 0.2
    trust: float = 0.15
    load: float = 0.05

    @classmethod
    def parse(cls, text: str) -> Weights:
        """``"cap:0.4,price:0.2,…"``; a term left out keeps its default; bad text is refused."""
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, raw = (s.strip() for s in part.partition(":"))
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not sep or name not in TERMS or name in values or not (0 <= value < math.inf):
                raise InvalidInput(
                    f"bad weight {part!r}: expected name:number, name one of {TERMS}", field="weights"
                )
            values[name] = value
        return cls(**values)


DEFAULT_WEIGHTS = Weights()


@dataclass(frozen=True, slots=True)
class NodeSpec:
    miner_id: str
    addr: str
    proto: str
    gpu_vram_gb: list[float]  # one entry per GPU; empty: a CPU node
    gpu_names: list[str]
    ram_gb: float
    region: str | None
    price: int  # micro-tokens per 1000 GPU-seconds
    max_parallel: int
    tags: list[str]
    capabilities: list[str]
    trust: float  # 0..1
    latency_ms: float | None  # None: no estimate yet (DEFAULT_LATENCY_MS)


@dataclass(frozen=True, slots=True)
class Requirements:
    task: str | None = None
    min_vram_gb: float | None = None
    min_ram_gb: float | None = None
    gpu_count: int | None = None
    accel: list[str] = field(default_factory=list)
    tags_any: list[str] = field(default_factory=list)
    capabilities_any: list[str] = field(default_factory=list)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Requirements:
        """From a request's or a stored task's requirements (unknown keys, like ``region``, ignored)."""
        return cls(
            task=raw.get("task"),
            min_vram_gb=raw.get("min_vram_gb"),
            min_ram_gb=raw.get("min_ram_gb"),
            gpu_count=raw.get("gpu_count"),
            accel=list(raw.get("accel") or []),
            tags_any=list(raw.get("tags_any") or []),
            capabilities_any=list(raw.get("capabilities_any") or []),
        )

    @property
    def gpus_needed(self) -> int:
        return self.gpu_count or (1 if self.min_vram_gb else 0)


@dataclass(frozen=True, slots=True)
class Hints:
    region: str | None = None
    max_price: int | None = None  # micro-tokens per 1000 GPU-seconds
    deadline_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    miner_id: str
    addr: str
    proto: str
    score: float
    eta_ms: float
    price: int  # micro-tokens per 1000 GPU-seconds
    explain: str = ""  # this candidate's terms


def runtimes(gpu_names: Sequence[str], tags: Sequence[str]) -> set[str]:
    """The runtimes a node offers: ``cuda`` for an NVIDIA GPU (by its name: NVML names them so) or a
    ``cuda`` tag, ``rocm`` likewise for AMD, ``cpu`` for a node without GPUs."""
    names = [n.lower() for n in gpu_names]
    lowered = {t.lower() for t in tags}
    out: set[str] = {r for r in ("cuda", "rocm") if r in lowered}
    if any(_NVIDIA.search(n) for n in names):
        out.add("cuda")
    if any(_AMD.search(n) for n in names):
        out.add("rocm")
    if not gpu_names:
        out.add("cpu")
    return out


def region_fits(hint: str, region: str | None) -> bool:
    """``eu`` fits ``eu`` and ``eu-west-1``: equal, or under it on a ``-`` boundary."""
    return region is not None and (region == hint or region.startswith(hint + "-"))


@dataclass(frozen=True, slots=True)
class MatchResult:
    candidates: list[Candidate]
    explain: str
    rejected: dict[str, int]


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as the reference matcher sees it: its spec (with live price and trust) and live state."""

    spec: NodeSpec
    online: bool
    queue_len: int


def _check(spec: NodeSpec) -> None:
    """Refuse values that would make scores meaningless (NaN, negative sizes, trust outside [0, 1])."""
    sizes = [*spec.gpu_vram_gb, spec.ram_gb, spec.latency_ms or 0.0]
    if not all(0 <= x < math.inf for x in sizes):
        raise InvalidInput(f"node {spec.miner_id}: sizes and latency must be finite and >= 0", field="spec")
    if spec.price < 0 or spec.max_parallel < 1 or not 0 <= spec.trust <= 1:
        raise InvalidInput(
            f"node {spec.miner_id}: price >= 0, max_parallel >= 1, trust in [0, 1]", field="spec"
        )
    if len(spec.gpu_names) not in (0, len(spec.gpu_vram_gb)):
        raise InvalidInput(f"node {spec.miner_id}: one GPU name per GPU", field="gpu_names")


class _Index:
    """Value -> rows holding it; boolean masks for queried values are cached and kept current."""

    def __init__(self) -> None:
        self.rows: dict[str, set[int]] = {}
        self.dense: dict[str, BoolArray] = {}

    def add(self, values: Iterable[str], row: int) -> None:
        for value in set(values):
            self.rows.setdefault(value, set()).add(row)
            if (mask := self.dense.get(value)) is not None:
                mask[row] = True

    def discard(self, values: Iterable[str], row: int) -> None:
        for value in set(values):
            rows = self.rows.get(value)
            if rows is not None:
                rows.discard(row)
                if not rows:
                    del self.rows[value]
            if (mask := self.dense.get(value)) is not None:
                mask[row] = False

    def mask(self, value: str, capacity: int) -> BoolArray:
        mask = self.dense.get(value)
        if mask is None:
            mask = np.zeros(capacity, dtype=np.bool_)
            mask[np.fromiter(self.rows.get(value, ()), dtype=np.intp)] = True
            if len(self.dense) >= DENSE_CACHE:
                del self.dense[next(iter(self.dense))]
            self.dense[value] = mask
        return mask

    def any_of(self, values: Iterable[str], capacity: int) -> BoolArray:
        out = np.zeros(capacity, dtype=np.bool_)
        for value in set(values):
            out |= self.mask(value, capacity)
        return out


class NodeTable:
    """The registry as numpy columns, one row per node; rows of removed nodes are reused."""

    used: BoolArray
    online: BoolArray
    n_gpus: IntArray
    vram: FloatArray
    vram_total: FloatArray
    ram: FloatArray
    price: IntArray
    max_parallel: IntArray
    queue_len: IntArray
    trust: FloatArray
    latency: FloatArray
    last_seen: FloatArray
    ids: npt.NDArray[np.object_]

    def __init__(self, weights: Weights = DEFAULT_WEIGHTS, capacity: int = 64) -> None:
        self.weights = weights
        self._row: dict[str, int] = {}
        self._free: list[int] = []
        self._specs: list[NodeSpec | None] = []
        self._tags, self._caps, self._regions, self._gpus = _Index(), _Index(), _Index(), _Index()
        self._runtimes = _Index()
        self._cap = 0
        self._grow(max(1, capacity), gpu_width=1)

    def _grow(self, capacity: int, gpu_width: int) -> None:
        """Reallocate every column to ``capacity`` rows (and ``gpu_width`` VRAM columns), keeping data."""
        old, self._cap = self._cap, capacity

        def col(name: str, fill: Any, dtype: Any, width: int | None = None) -> None:
            shape = (capacity,) if width is None else (capacity, width)
            new = np.full(shape, fill, dtype=dtype)
            if old:
                prev = getattr(self, name)
                if width is None:
                    new[:old] = prev
                else:
                    new[:old, : prev.shape[1]] = prev
            setattr(self, name, new)

        col("used", False, np.bool_)
        col("online", False, np.bool_)
        col("n_gpus", 0, np.int64)
        col("vram", 0.0, np.float64, gpu_width)  # per row, largest first
        col("vram_total", 0.0, np.float64)
        col("ram", 0.0, np.float64)
        col("price", 0, np.int64)
        col("max_parallel", 1, np.int64)
        col("queue_len", 0, np.int64)
        col("trust", 0.0, np.float64)
        col("latency", DEFAULT_LATENCY_MS, np.float64)
        col("last_seen", 0.0, np.float64)
        col("ids", "", object)
        self._specs.extend([None] * (capacity - old))
        self._free.extend(range(capacity - 1, old - 1, -1))  # popped lowest first
        for index in (self._tags, self._caps, self._regions, self._gpus, self._runtimes):
            index.dense.clear()

    def __len__(self) -> int:
        return len(self._row)

    def row_of(self, miner_id: str) -> int:
        """The row holding ``miner_id`` (KeyError when unknown)."""
        return self._row[miner_id]

    def upsert(self, spec: NodeSpec) -> None:
        """Add a node, or replace its spec keeping its live state (online, queue, last seen)."""
        _check(spec)
        row = self._row.get(spec.miner_id)
        if row is None:
            if not self._free:
                self._grow(2 * self._cap, self.vram.shape[1])
            row = self._free.pop()
            self._row[spec.miner_id] = row
            self.online[row], self.queue_len[row], self.last_seen[row] = False, 0, 0.0
        else:
            self._unindex(row)
        if len(spec.gpu_vram_gb) > self.vram.shape[1]:
            self._grow(self._cap, len(spec.gpu_vram_gb))
        self._specs[row] = spec
        self.ids[row] = spec.miner_id
        self.used[row] = True
        self.n_gpus[row] = len(spec.gpu_vram_gb)
        self.vram[row] = 0.0
        self.vram[row, : len(spec.gpu_vram_gb)] = sorted(spec.gpu_vram_gb, reverse=True)
        self.vram_total[row] = float(sum(spec.gpu_vram_gb))
        self.ram[row], self.price[row], self.max_parallel[row] = spec.ram_gb, spec.price, spec.max_parallel
        self.trust[row] = spec.trust
        self.latency[row] = DEFAULT_LATENCY_MS if spec.latency_ms is None else spec.latency_ms
        self._tags.add(spec.tags, row)
        self._caps.add(spec.capabilities, row)
        self._regions.add([spec.region] if spec.region is not None else [], row)
        self._gpus.add([n.lower() for n in spec.gpu_names], row)
        self._runtimes.add(runtimes(spec.gpu_names, spec.tags), row)

    def _unindex(self, row: int) -> None:
        old = self._specs[row]
        assert old is not None
        self._tags.discard(old.tags, row)
        self._caps.discard(old.capabilities, row)
        self._regions.discard([old.region] if old.region is not None else [], row)
        self._gpus.discard([n.lower() for n in old.gpu_names], row)
        self._runtimes.discard(runtimes(old.gpu_names, old.tags), row)

    def remove(self, miner_id: str) -> None:
        """Forget a node (unknown ids are ignored); its row is reused by the next new node."""
        row = self._row.pop(miner_id, None)
        if row is not None:
            self._unindex(row)
            self._specs[row] = None
            self.ids[row] = ""
            self.used[row] = self.online[row] = False
            self._free.append(row)

    # Live-state setters ignore unknown ids: a heartbeat or feedback can race a removal.
    def heartbeat(self, miner_id: str, now: float, *, queue_len: int) -> None:
        if queue_len < 0:
            raise InvalidInput("queue_len must be >= 0", field="queue_len")
        if (row := self._row.get(miner_id)) is not None:
            self.online[row], self.last_seen[row], self.queue_len[row] = True, now, queue_len

    def set_online(self, miner_id: str, online: bool) -> None:
        if (row := self._row.get(miner_id)) is not None:
            self.online[row] = online

    def set_trust(self, miner_id: str, trust: float, latency_ms: float | None) -> None:
        if not 0 <= trust <= 1 or (latency_ms is not None and not 0 <= latency_ms < math.inf):
            raise InvalidInput("trust must be in [0, 1] and latency finite and >= 0", field="trust")
        if (row := self._row.get(miner_id)) is not None:
            self.trust[row] = trust
            self.latency[row] = DEFAULT_LATENCY_MS if latency_ms is None else latency_ms

    def set_price(self, miner_id: str, price: int) -> None:
        if price < 0:
            raise InvalidInput("price must be >= 0", field="price")
        if (row := self._row.get(miner_id)) is not None:
            self.price[row] = price

    def views(self) -> list[NodeView]:
        """Every node with its live state, as ``match_reference`` takes them."""
        out = []
        for row in self._row.values():
            spec = self._specs[row]
            assert spec is not None
            live = replace(spec, price=int(self.price[row]), trust=float(self.trust[row]))
            live = replace(live, latency_ms=float(self.latency[row]))
            out.append(NodeView(live, bool(self.online[row]), int(self.queue_len[row])))
        return out

    def match(self, req: Requirements, hints: Hints, top_k: int) -> MatchResult:
        """The best ``top_k`` nodes for a job, why the others were filtered out, and the best one's terms."""
        if top_k < 1:
            raise InvalidInput("top_k must be >= 1", field="top_k")
        alive = self.used.copy()
        total = len(self._row)
        rejected: dict[str, int] = {}
        for reason, passes in self._filters(req, hints):
            failing = int(np.count_nonzero(alive & ~passes))
            if failing:
                rejected[reason] = failing
                alive &= passes
        rows = np.flatnonzero(alive)
        if not len(rows):
            return MatchResult([], _explain_none(total, rejected), rejected)
        terms = self._terms(rows, req)
        score = _score(terms, self.weights, len(rows))
        picked = _top_k(score, rows, self, top_k)
        candidates = [
            self._candidate(int(rows[i]), float(score[i]), {t: float(terms[t][i]) for t in TERMS})
            for i in picked
        ]
        best = {t: float(terms[t][picked[0]]) for t in TERMS}
        return MatchResult(candidates, _explain(candidates[0], best, self.weights, total, rejected), rejected)

    def _candidate(self, row: int, score: float, terms: dict[str, float]) -> Candidate:
        spec = self._specs[row]
        assert spec is not None
        eta = float(self.latency[row] * (1 + self.queue_len[row]))
        explain = _terms_text(score, terms, self.weights)
        return Candidate(
            spec.miner_id, spec.addr, spec.proto, round(score, 6), eta, int(self.price[row]), explain
        )

    def _filters(self, req: Requirements, hints: Hints) -> Iterable[tuple[str, BoolArray]]:
        """(reason, rows passing) for each filter the query switches on, in ``REASONS`` order."""
        yield "offline", self.online
        if req.gpu_count:
            yield "gpu_count", self.n_gpus >= req.gpu_count
        if req.min_vram_gb:
            need = req.gpus_needed  # rows hold VRAM largest first: the need-th largest must be enough
            if need <= self.vram.shape[1]:
                yield "vram", self.vram[:, need - 1] >= req.min_vram_gb
            else:
                yield "vram", np.zeros(self._cap, dtype=np.bool_)
        if req.min_ram_gb:
            yield "ram", self.ram >= req.min_ram_gb
        if req.accel:
            yield "accel", self._accel(req.accel)
        if req.capabilities_any:
            yield "capabilities", self._caps.any_of(req.capabilities_any, self._cap)
        if req.tags_any:
            yield "tags", self._tags.any_of(req.tags_any, self._cap)
        if hints.region:
            regions = [r for r in self._regions.rows if region_fits(hints.region, r)]
            yield "region", self._regions.any_of(regions, self._cap)
        if hints.max_price is not None:
            yield "price", self.price <= hints.max_price
        yield "busy", self.queue_len < self.max_parallel
        if hints.deadline_ms is not None:
            yield "deadline", self.latency * (1 + self.queue_len) <= hints.deadline_ms

    def _accel(self, accel: Sequence[str]) -> BoolArray:
        wanted = [a.lower() for a in accel]
        models = [w for w in wanted if w not in RUNTIMES]
        names = [n for n in self._gpus.rows if any(w in n for w in models)]
        mask = self._gpus.any_of(names, self._cap)
        return mask | self._runtimes.any_of([w for w in wanted if w in RUNTIMES], self._cap)

    def _terms(self, rows: npt.NDArray[np.intp], req: Requirements) -> dict[str, FloatArray]:
        need = req.gpus_needed
        if req.min_vram_gb:
            cap = np.minimum(1.0, req.min_vram_gb * need / np.maximum(self.vram_total[rows], 1e-9))
        elif need:
            cap = np.minimum(1.0, need / np.maximum(self.n_gpus[rows], 1))
        else:
            cap = np.ones(len(rows))
        return {
            "cap": cap,
            "price": _low_is_good(self.price[rows].astype(np.float64)),
            "latency": _low_is_good(self.latency[rows]),
            "trust": self.trust[rows],
            "load": 1.0 - self.queue_len[rows] / self.max_parallel[rows],
        }


def _low_is_good(values: FloatArray) -> FloatArray:
    low, high = float(values.min()), float(values.max())
    return np.ones(len(values)) if high <= low else (high - values) / (high - low)


def _score(terms: dict[str, FloatArray], weights: Weights, n: int) -> FloatArray:
    score = np.zeros(n)
    for t in TERMS:  # term by term, in the same order as the reference, so the sums agree to the bit
        score = score + getattr(weights, t) * terms[t]
    return score


def _top_k(score: FloatArray, rows: npt.NDArray[np.intp], table: NodeTable, k: int) -> list[int]:
    """Positions of the ``k`` best scores, best first, equal scores by id (ties at the cut included)."""
    pick = np.arange(len(score))
    if len(score) > k:
        kth = score[np.argpartition(-score, k - 1)[k - 1]]
        better, tied = np.flatnonzero(score > kth), np.flatnonzero(score == kth)
        need = k - len(better)
        if len(tied) > need:  # a big tie (a fresh pool of alike nodes): the smallest ids, in O(ties)
            smallest = heapq.nsmallest(need, table.ids[rows[tied]].tolist())
            tied = np.searchsorted(rows, [table.row_of(i) for i in smallest])  # rows are ascending
        pick = np.concatenate([better, tied]).astype(np.intp)
    ids = table.ids[rows[pick]].tolist()
    order = sorted(range(len(pick)), key=lambda j: (-score[pick[j]], ids[j]))
    return [int(pick[j]) for j in order[:k]]


def _explain(
    best: Candidate, terms: dict[str, float], weights: Weights, total: int, rejected: dict[str, int]
) -> str:
    parts = " + ".join(f"{t} {getattr(weights, t):.2f}*{terms[t]:.2f}" for t in TERMS)
    return f"best {best.miner_id} score={best.score:.3f}: {parts}; {_filtered(total, rejected)}"


def _terms_text(score: float, terms: dict[str, float], weights: Weights) -> str:
    parts = " + ".join(f"{t} {getattr(weights, t):.2f}*{terms[t]:.2f}" for t in TERMS)
    return f"score={score:.3f}: {parts}"


def _filtered(total: int, rejected: dict[str, int]) -> str:
    text = f"filtered {sum(rejected.values())} of {total}"
    if rejected:
        text += " (" + ", ".join(f"{r} {rejected[r]}" for r in REASONS if r in rejected) + ")"
    return text


def _explain_none(total: int, rejected: dict[str, int]) -> str:
    if total == 0:
        return "no candidates: no nodes are registered"
    return f"no candidates: {_filtered(total, rejected)}"


# -- the same rules as a loop: the tests' oracle and the benchmark's peer ---------------------------------


def match_reference(
    nodes: Sequence[NodeView], req: Requirements, hints: Hints, top_k: int, weights: Weights = DEFAULT_WEIGHTS
) -> MatchResult:
    """``NodeTable.match`` written as a plain loop over nodes."""
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
    prices = [float(v.spec.price) for v in fit]
    lats = [_latency(v.spec) for v in fit]
    price_range, latency_range = (min(prices), max(prices)), (min(lats), max(lats))
    scored = []
    for v in fit:
        terms = {
            "cap": _cap_fit(v.spec, req),
            "price": _low_is_good_ref(*price_range, float(v.spec.price)),
            "latency": _low_is_good_ref(*latency_range, _latency(v.spec)),
            "trust": v.spec.trust,
            "load": 1.0 - v.queue_len / v.spec.max_parallel,
        }
        score = 0.0
        for t in TERMS:
            score = score + getattr(weights, t) * terms[t]
        scored.append((-score, v.spec.miner_id, v, terms))
    scored.sort(key=lambda x: (x[0], x[1]))
    candidates = [
        Candidate(
            v.spec.miner_id,
            v.spec.addr,
            v.spec.proto,
            round(-neg, 6),
            _eta(v),
            v.spec.price,
            _terms_text(-neg, terms, weights),
        )
        for neg, _, v, terms in scored[:top_k]
    ]
    return MatchResult(
        candidates, _explain(candidates[0], scored[0][3], weights, len(nodes), rejected), rejected
    )


def _latency(spec: NodeSpec) -> float:
    return DEFAULT_LATENCY_MS if spec.latency_ms is None else spec.latency_ms


def _eta(view: NodeView) -> float:
    return _latency(view.spec) * (1 + view.queue_len)


def _low_is_good_ref(low: float, high: float, x: float) -> float:
    return 1.0 if high <= low else (high - x) / (high - low)


def _cap_fit(s: NodeSpec, req: Requirements) -> float:
    need = req.gpus_needed
    if req.min_vram_gb:
        return min(1.0, req.min_vram_gb * need / max(sum(s.gpu_vram_gb), 1e-9))
    return min(1.0, need / max(len(s.gpu_vram_gb), 1)) if need else 1.0


def _first_failure(view: NodeView, req: Requirements, hints: Hints) -> str | None:
    s = view.spec
    names = [n.lower() for n in s.gpu_names]
    accel = [a.lower() for a in req.accel]
    offered = runtimes(s.gpu_names, s.tags)
    checks = (
        ("offline", view.online),
        ("gpu_count", not req.gpu_count or len(s.gpu_vram_gb) >= req.gpu_count),
        ("vram", not req.min_vram_gb or sum(v >= req.min_vram_gb for v in s.gpu_vram_gb) >= req.gpus_needed),
        ("ram", not req.min_ram_gb or s.ram_gb >= req.min_ram_gb),
        (
            "accel",
            not accel or any(a in offered if a in RUNTIMES else any(a in n for n in names) for a in accel),
        ),
        ("capabilities", _has_capabilities(s, req)),
        ("tags", not req.tags_any or any(t in s.tags for t in req.tags_any)),
        ("region", not hints.region or region_fits(hints.region, s.region)),
        ("price", hints.max_price is None or s.price <= hints.max_price),
        ("busy", view.queue_len < s.max_parallel),
        ("deadline", hints.deadline_ms is None or _eta(view) <= hints.deadline_ms),
    )
    return next((reason for reason, ok in checks if not ok), None)


def _has_capabilities(s: NodeSpec, req: Requirements) -> bool:
    return not req.capabilities_any or any(c in s.capabilities for c in req.capabilities_any)
