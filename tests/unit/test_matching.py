"""Matching rules (SPEC §3.3): filters, scores, explain; the vectorised table equals the plain loop."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpupool.core import matching, trust
from gpupool.core.matching import Hints, NodeSpec, NodeTable, NodeView, Requirements, Weights
from gpupool.errors import InvalidInput

GPUS = [("NVIDIA H100 80GB HBM3", 80.0), ("NVIDIA A100-SXM4-40GB", 40.0), ("NVIDIA GeForce RTX 4090", 24.0)]


def spec(miner_id: str, *, gpus: int = 1, model: int = 0, price: int = 1_000_000, **kw: object) -> NodeSpec:
    name, vram = GPUS[model]
    values: dict[str, object] = {
        "miner_id": miner_id,
        "addr": f"{miner_id}:8080",
        "proto": "http",
        "gpu_vram_gb": [vram] * gpus,
        "gpu_names": [name] * gpus,
        "ram_gb": 64.0,
        "region": "eu",
        "price": price,
        "max_parallel": 2,
        "tags": [],
        "capabilities": ["inference"],
        "trust": trust.INITIAL_TRUST,
        "latency_ms": None,
    }
    values.update(kw)
    return NodeSpec(**values)  # type: ignore[arg-type]


def table(*specs: NodeSpec, weights: Weights = matching.DEFAULT_WEIGHTS) -> NodeTable:
    t = NodeTable(weights, capacity=2)
    for s in specs:
        t.upsert(s)
        t.heartbeat(s.miner_id, 0.0, queue_len=0)
    return t


def ids(result: matching.MatchResult) -> list[str]:
    return [c.miner_id for c in result.candidates]


def test_each_filtered_node_counts_once_under_its_first_failing_reason() -> None:
    t = table(
        spec("small", model=2),  # offline and too small: counted as offline
        spec("a100", model=1),
        spec("big", gpus=8),
        spec("far", region="us", price=9_000_000),  # wrong region and too dear: counted as region
        spec("dear", price=9_000_000),
        spec("tiny", model=2),
    )
    t.set_online("small", False)
    result = t.match(Requirements(min_vram_gb=30), Hints(region="eu", max_price=2_000_000), top_k=5)
    assert set(ids(result)) == {"a100", "big"}
    assert result.rejected == {"offline": 1, "vram": 1, "region": 1, "price": 1}
    assert result.explain.endswith("filtered 4 of 6 (offline 1, vram 1, region 1, price 1)")


def test_explain_gives_every_term_of_the_best_candidate() -> None:
    t = table(spec("one-gpu"), spec("eight-gpu", gpus=8))
    result = t.match(Requirements(min_vram_gb=70), Hints(), top_k=2)
    assert ids(result) == ["one-gpu", "eight-gpu"]  # the right-sized node wins at the same price
    assert result.candidates[0].score == pytest.approx(0.4 * 0.875 + 0.2 + 0.2 + 0.15 * 0.5 + 0.05)
    assert result.explain == (
        "best one-gpu score=0.875: cap 0.40*0.88 + price 0.20*1.00 + latency 0.20*1.00"
        " + trust 0.15*0.50 + load 0.05*1.00; filtered 0 of 2"
    )


def test_no_candidates_says_why() -> None:
    assert NodeTable().match(Requirements(), Hints(), 3).explain == "no candidates: no nodes are registered"
    none = table(spec("a"), spec("b"), spec("c", model=2)).match(Requirements(min_vram_gb=200), Hints(), 3)
    assert none.candidates == [] and none.rejected == {"vram": 3}
    assert none.explain == "no candidates: filtered 3 of 3 (vram 3)"


def test_vram_counts_gpus_that_are_big_enough_against_gpu_count() -> None:
    mixed = spec("mixed", gpus=2, gpu_vram_gb=[24.0, 80.0])
    t = table(mixed, spec("two-h100", gpus=2), spec("one-h100"))
    assert set(ids(t.match(Requirements(min_vram_gb=70), Hints(), 5))) == {"mixed", "two-h100", "one-h100"}
    two = t.match(Requirements(min_vram_gb=40, gpu_count=2), Hints(), 5)
    assert ids(two) == ["two-h100"] and two.rejected == {"gpu_count": 1, "vram": 1}
    assert ids(t.match(Requirements(gpu_count=2), Hints(), 5)) == ["mixed", "two-h100"]


def test_a_node_with_more_gpus_than_any_before_widens_the_table() -> None:
    t = table(spec("small"))
    t.upsert(spec("pod", gpus=32))
    t.heartbeat("pod", 0.0, queue_len=0)
    assert ids(t.match(Requirements(min_vram_gb=80, gpu_count=20), Hints(), 5)) == ["pod"]
    assert t.match(Requirements(min_vram_gb=80, gpu_count=33), Hints(), 5).rejected == {"gpu_count": 2}


def test_accel_capabilities_task_tags_and_ram() -> None:
    cpu = spec("cpu", gpus=0, capabilities=["batch"], tags=["cheap"], ram_gb=512.0)
    t = table(cpu, spec("h100", tags=["llm"]), spec("4090", model=2, capabilities=["inference", "training"]))
    assert ids(t.match(Requirements(accel=["H100"]), Hints(), 3)) == ["h100"]
    assert ids(t.match(Requirements(accel=["cpu"]), Hints(), 3)) == ["cpu"]
    assert set(ids(t.match(Requirements(accel=["cpu", "rtx"]), Hints(), 3))) == {"cpu", "4090"}
    # ``task`` is a hint (seed 002): it never filters a node out.
    assert set(ids(t.match(Requirements(task="training"), Hints(), 3))) == {"cpu", "h100", "4090"}
    both = t.match(Requirements(task="training", capabilities_any=["batch"]), Hints(), 3)
    assert ids(both) == ["cpu"] and both.rejected == {"capabilities": 2}
    tagged = t.match(Requirements(tags_any=["cheap", "llm"]), Hints(), 3)
    assert set(ids(tagged)) == {"cpu", "h100"} and tagged.rejected == {"tags": 1}
    assert ids(t.match(Requirements(min_ram_gb=128), Hints(), 3)) == ["cpu"]


def test_busy_nodes_are_filtered_and_queue_length_lowers_load_and_raises_eta() -> None:
    t = table(spec("idle", latency_ms=100.0), spec("half", latency_ms=100.0), spec("full"))
    t.heartbeat("half", 1.0, queue_len=1)
    t.heartbeat("full", 1.0, queue_len=2)
    result = t.match(Requirements(), Hints(), top_k=3)
    assert ids(result) == ["idle", "half"] and result.rejected == {"busy": 1}
    assert [c.eta_ms for c in result.candidates] == [100.0, 200.0]
    assert t.match(Requirements(), Hints(deadline_ms=150), 3).rejected == {"busy": 1, "deadline": 1}


def test_price_trust_and_latency_updates_move_the_ranking() -> None:
    t = table(spec("a"), spec("b"))
    assert ids(t.match(Requirements(), Hints(), 2)) == ["a", "b"]  # equal: by id
    t.set_price("a", 2_000_000)
    assert ids(t.match(Requirements(), Hints(), 2)) == ["b", "a"]
    assert t.match(Requirements(), Hints(max_price=1_500_000), 2).rejected == {"price": 1}
    t.set_price("a", 1_000_000)
    t.set_trust("a", 0.9, 50.0)
    t.set_trust("b", 0.9, 500.0)
    result = t.match(Requirements(), Hints(), 2)
    assert ids(result) == ["a", "b"] and result.candidates[0].eta_ms == 50.0
    live = {v.spec.miner_id: (v.spec.price, v.spec.trust, v.spec.latency_ms) for v in t.views()}
    assert live == {"a": (1_000_000, 0.9, 50.0), "b": (1_000_000, 0.9, 500.0)}


def test_weights_decide_what_matters() -> None:
    cheap_slow = spec("cheap", price=100_000, latency_ms=900.0)
    dear_fast = spec("fast", price=900_000, latency_ms=10.0)
    by_price = table(cheap_slow, dear_fast, weights=Weights.parse("cap:0,price:1,latency:0,trust:0,load:0"))
    by_latency = table(cheap_slow, dear_fast, weights=Weights.parse("price:0,latency:1"))
    assert ids(by_price.match(Requirements(), Hints(), 2)) == ["cheap", "fast"]
    assert ids(by_latency.match(Requirements(), Hints(), 2)) == ["fast", "cheap"]


def test_weights_parse_accepts_partial_text_and_refuses_bad_text() -> None:
    w = Weights.parse(" cap:1 ,price:0, latency:0.5")
    assert (w.cap, w.price, w.latency, w.trust, w.load) == (1.0, 0.0, 0.5, 0.15, 0.05)
    assert Weights.parse("cap:0.4,price:0.2,latency:0.2,trust:0.15,load:0.05") == matching.DEFAULT_WEIGHTS
    for bad in ("cap=1", "speed:1", "cap:-1", "cap:x", "cap:inf", "cap:nan", "cap:1,cap:2", "cap"):
        with pytest.raises(InvalidInput):
            Weights.parse(bad)


def test_remove_reuses_rows_and_the_table_grows() -> None:
    t = table(*(spec(f"n{i}") for i in range(10)))
    for i in range(0, 10, 2):
        t.remove(f"n{i}")
    t.remove("never-registered")
    t.upsert(spec("fresh"))
    t.heartbeat("fresh", 0.0, queue_len=0)
    assert len(t) == 6
    assert set(ids(t.match(Requirements(), Hints(), 10))) == {"n1", "n3", "n5", "n7", "n9", "fresh"}
    assert ids(t.match(Requirements(), Hints(), 1)) == ["fresh"]  # all equal: smallest id


def test_upsert_replaces_the_spec_but_keeps_live_state() -> None:
    t = table(spec("a", tags=["old"]), spec("b", tags=["old"]))
    t.heartbeat("a", 5.0, queue_len=1)
    assert set(ids(t.match(Requirements(tags_any=["old"]), Hints(), 5))) == {"a", "b"}  # mask now cached
    t.upsert(spec("a", tags=["new"], max_parallel=1))
    after = t.match(Requirements(tags_any=["old"]), Hints(), 5)
    assert ids(after) == ["b"] and after.rejected == {"tags": 1}
    assert t.match(Requirements(tags_any=["new"]), Hints(), 5).rejected == {"tags": 1, "busy": 1}


def test_accel_names_a_runtime_or_a_gpu_model() -> None:
    amd = spec("mi300", gpu_names=["AMD Instinct MI300X"], gpu_vram_gb=[192.0])
    tagged = spec("tagged", gpu_names=["Some Accelerator"], tags=["CUDA", "12.2"])
    old = spec("v100", gpu_names=["Tesla V100-SXM2-16GB"], gpu_vram_gb=[16.0])
    t = table(spec("h100"), spec("4090", model=2), amd, tagged, old, spec("cpu", gpus=0))
    assert set(ids(t.match(Requirements(accel=["cuda"]), Hints(), 9))) == {"h100", "4090", "tagged", "v100"}
    assert ids(t.match(Requirements(accel=["rocm"]), Hints(), 9)) == ["mi300"]
    assert ids(t.match(Requirements(accel=["CPU"]), Hints(), 9)) == ["cpu"]
    assert ids(t.match(Requirements(accel=["4090"]), Hints(), 9)) == ["4090"]  # a model name still works
    assert matching.runtimes(["NVIDIA H100 80GB HBM3"], []) == {"cuda"}
    assert matching.runtimes([], ["rocm"]) == {"rocm", "cpu"}


def test_region_hint_takes_regions_under_it_on_dash_boundaries() -> None:
    t = table(
        spec("eu", region="eu"),
        spec("eu-west-1", region="eu-west-1"),
        spec("europe", region="europe"),
        spec("none", region=None),
        spec("us", region="us-east"),
    )
    result = t.match(Requirements(), Hints(region="eu"), 9)
    assert set(ids(result)) == {"eu", "eu-west-1"} and result.rejected == {"region": 3}
    assert ids(t.match(Requirements(), Hints(region="eu-west"), 9)) == ["eu-west-1"]


def test_each_candidate_carries_its_own_explain() -> None:
    t = table(spec("cheap", price=100_000), spec("dear", price=900_000))
    result = t.match(Requirements(), Hints(), 2)
    assert [c.miner_id for c in result.candidates] == ["cheap", "dear"]
    assert result.candidates[0].explain.startswith("score=0.925: cap 0.40*1.00 + price 0.20*1.00")
    assert "price 0.20*0.00" in result.candidates[1].explain


def test_better_nodes_and_a_tie_at_the_cut_return_exactly_top_k() -> None:
    t = table(spec("best", trust=0.9), spec("b", trust=0.5), spec("a", trust=0.5), spec("c", trust=0.5))
    assert ids(t.match(Requirements(), Hints(), 2)) == ["best", "a"]
    assert ids(t.match(Requirements(), Hints(), 3)) == ["best", "a", "b"]


def test_a_big_tie_ranks_by_miner_id() -> None:
    t = table(*(spec(f"m{i:03d}") for i in reversed(range(300))))
    assert ids(t.match(Requirements(), Hints(), 4)) == ["m000", "m001", "m002", "m003"]


def test_live_setters_ignore_unknown_nodes() -> None:
    t = table(spec("a"))
    t.heartbeat("ghost", 1.0, queue_len=0)
    t.set_online("ghost", True)
    t.set_trust("ghost", 0.9, 10.0)
    t.set_price("ghost", 1)
    assert len(t) == 1 and ids(t.match(Requirements(), Hints(), 5)) == ["a"]


@pytest.mark.parametrize(
    "bad",
    [
        {"trust": 1.5},
        {"trust": math.nan},
        {"price": -1},
        {"max_parallel": 0},
        {"ram_gb": -1.0},
        {"gpu_vram_gb": [math.inf]},
        {"latency_ms": math.nan},
        {"gpu_names": ["a", "b"]},
    ],
)
def test_bad_specs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        NodeTable().upsert(spec("x", **bad))  # type: ignore[arg-type]


def test_bad_live_values_and_top_k_are_refused() -> None:
    t = table(spec("a"))
    for call in (
        lambda: t.heartbeat("a", 0.0, queue_len=-1),
        lambda: t.set_trust("a", -0.1, None),
        lambda: t.set_price("a", -5),
        lambda: t.match(Requirements(), Hints(), 0),
    ):
        with pytest.raises(InvalidInput):
            call()


# -- property: the vectorised table and the reference loop agree --------------------------------------

node_strategy = st.builds(
    lambda i, models, price, region, tags, caps, queue, online, trust_, latency, ram: NodeView(
        spec(
            f"m{i:03d}",
            gpu_vram_gb=[GPUS[m][1] for m in models],  # mixed GPUs in one node
            gpu_names=[GPUS[m][0] for m in models],
            price=price,
            region=region,
            tags=tags,
            capabilities=caps,
            trust=trust_,
            latency_ms=latency,
            ram_gb=ram,
        ),
        online,
        queue,
    ),
    st.integers(0, 999),
    st.lists(st.integers(0, 2), max_size=4),
    st.sampled_from([100_000, 500_000, 1_000_000, 2_000_000]),
    st.sampled_from(["eu", "eu-west-1", "europe", "us", None]),
    st.lists(st.sampled_from(["llm", "spot", "secure", "cuda"]), max_size=2),
    st.lists(st.sampled_from(["inference", "training", "embed"]), max_size=2),
    st.integers(0, 2),
    st.booleans(),
    st.sampled_from([0.05, 0.3, 0.5, 0.9]),
    st.sampled_from([None, 50.0, 400.0]),
    st.sampled_from([16.0, 64.0, 256.0]),
)
req_strategy = st.builds(
    Requirements,
    task=st.sampled_from([None, "training"]),
    min_vram_gb=st.sampled_from([None, 20.0, 40.0, 80.0]),
    min_ram_gb=st.sampled_from([None, 32.0]),
    gpu_count=st.sampled_from([None, 1, 2, 4]),
    accel=st.lists(st.sampled_from(["h100", "A100", "cpu", "rtx", "cuda", "rocm"]), max_size=2),
    tags_any=st.lists(st.sampled_from(["llm", "spot", "stale"]), max_size=2),
    capabilities_any=st.lists(st.sampled_from(["inference", "embed", "stale"]), max_size=1),
)
hints_strategy = st.builds(
    Hints,
    region=st.sampled_from([None, "eu", "eu-west", "stale"]),
    max_price=st.sampled_from([None, 600_000]),
    deadline_ms=st.sampled_from([None, 900]),
)
weights_strategy = st.sampled_from(
    [
        matching.DEFAULT_WEIGHTS,
        Weights.parse("cap:1,price:0,latency:0,trust:0,load:0"),
        Weights(0, 0, 0, 0, 0),
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(node_strategy, max_size=40, unique_by=lambda v: v.spec.miner_id),
    st.lists(st.integers(0, 39), max_size=10),
    req_strategy,
    hints_strategy,
    st.integers(1, 8),
    weights_strategy,
)
def test_vectorised_match_equals_the_reference_loop(
    nodes: list[NodeView], removed: list[int], req: Requirements, hints: Hints, top_k: int, weights: Weights
) -> None:
    t = NodeTable(weights, capacity=1)
    for view in nodes:  # every node also goes in once with other tags, to exercise re-indexing
        t.upsert(replace(view.spec, tags=["stale"], capabilities=["stale"], region="stale"))
        t.match(Requirements(tags_any=["stale"], capabilities_any=["stale"]), Hints(region="stale"), 1)
        t.upsert(view.spec)
        t.heartbeat(view.spec.miner_id, 0.0, queue_len=view.queue_len)
        t.set_online(view.spec.miner_id, view.online)
    gone = {nodes[i].spec.miner_id for i in removed if i < len(nodes)}
    for miner_id in gone:
        t.remove(miner_id)
    kept = [v for v in nodes if v.spec.miner_id not in gone]
    fast = t.match(req, hints, top_k)
    slow = matching.match_reference(kept, req, hints, top_k, weights)
    assert fast.rejected == slow.rejected
    assert ids(fast) == ids(slow)
    assert [c.score for c in fast.candidates] == pytest.approx([c.score for c in slow.candidates], abs=1e-9)
    assert [(c.eta_ms, c.price, c.addr) for c in fast.candidates] == [
        (c.eta_ms, c.price, c.addr) for c in slow.candidates
    ]
    assert fast.explain == slow.explain
    assert sum(fast.rejected.values()) + len(fast.candidates) <= len(kept)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(2, 12),
    st.data(),
)
def test_strictly_better_nodes_and_a_tie_at_the_cut_give_exactly_top_k(
    n_better: int, n_tied: int, data: st.DataObject
) -> None:
    """Some nodes strictly better, the rest tied, and the cut inside the tie: exactly ``top_k`` come back,
    the better ones first and then the tied ones by id, as the reference loop says."""
    top_k = data.draw(st.integers(n_better + 1, n_better + n_tied - 1))
    ids_ = data.draw(st.permutations([f"m{i:03d}" for i in range(n_better + n_tied)]))
    views = [NodeView(spec(i, trust=0.9 if j < n_better else 0.5), True, 0) for j, i in enumerate(ids_)]
    t = table(*(v.spec for v in views))
    fast = t.match(Requirements(), Hints(), top_k)
    slow = matching.match_reference(views, Requirements(), Hints(), top_k)
    assert len(fast.candidates) == top_k
    assert ids(fast) == ids(slow)
    assert set(ids(fast)[:n_better]) == set(ids_[:n_better])
