"""Matching rules: the vectorised table and the plain-loop reference give the same answers."""

from __future__ import annotations

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


def table(*specs: NodeSpec, online: bool = True) -> NodeTable:
    t = NodeTable(capacity=2)
    for s in specs:
        t.upsert(s)
        t.heartbeat(s.miner_id, 0.0, queue_len=0)
        t.set_online(s.miner_id, online)
    return t


def test_filters_count_each_node_under_its_first_failing_reason() -> None:
    t = table(
        spec("small", model=2),
        spec("a100", model=1),
        spec("big", gpus=8),
        spec("far", region="us"),
        spec("dear", price=9_000_000),
    )
    t.set_online("small", False)
    result = t.match(Requirements(min_vram_gb=30), Hints(region="eu", max_price=2_000_000), top_k=5)
    assert {c.miner_id for c in result.candidates} == {"a100", "big"}
    assert result.rejected == {"offline": 1, "region": 1, "price": 1}


def test_right_sized_node_beats_an_oversized_one_at_the_same_price() -> None:
    t = table(spec("one-gpu"), spec("eight-gpu", gpus=8))
    result = t.match(Requirements(min_vram_gb=70), Hints(), top_k=2)
    assert [c.miner_id for c in result.candidates] == ["one-gpu", "eight-gpu"]
    assert result.explain.startswith("best one-gpu score=")
    assert "cap 0.4*0.88" in result.explain and "2 of 2 nodes fit" in result.explain


def test_busy_nodes_are_filtered_and_load_counts() -> None:
    t = table(spec("idle"), spec("half"), spec("full"))
    t.heartbeat("half", 1.0, queue_len=1)
    t.heartbeat("full", 1.0, queue_len=2)
    result = t.match(Requirements(), Hints(), top_k=3)
    assert [c.miner_id for c in result.candidates] == ["idle", "half"]
    assert result.rejected == {"busy": 1}
    assert result.candidates[1].eta_ms == 2 * matching.DEFAULT_LATENCY_MS


def test_accel_capabilities_tags_and_cpu_nodes() -> None:
    cpu = spec("cpu", gpus=0, capabilities=["batch"], tags=["cheap"])
    t = table(cpu, spec("h100", tags=["llm"]), spec("4090", model=2, capabilities=["inference", "training"]))
    assert [c.miner_id for c in t.match(Requirements(accel=["H100"]), Hints(), 3).candidates] == ["h100"]
    assert [c.miner_id for c in t.match(Requirements(accel=["cpu"]), Hints(), 3).candidates] == ["cpu"]
    assert [c.miner_id for c in t.match(Requirements(task="training"), Hints(), 3).candidates] == ["4090"]
    tagged = t.match(Requirements(tags_any=["cheap", "llm"]), Hints(), 3)
    assert {c.miner_id for c in tagged.candidates} == {"cpu", "h100"} and tagged.rejected == {"tags": 1}
    none = t.match(Requirements(min_vram_gb=200), Hints(), 3)
    assert none.candidates == [] and none.rejected == {"vram": 3} and none.explain.startswith("no node fits")


def test_remove_reuses_slots_and_table_grows() -> None:
    t = NodeTable(capacity=2)
    for i in range(10):
        t.upsert(spec(f"n{i}"))
        t.heartbeat(f"n{i}", 0.0, queue_len=0)
    for i in range(0, 10, 2):
        t.remove(f"n{i}")
    t.upsert(spec("fresh"))
    t.heartbeat("fresh", 0.0, queue_len=0)
    assert len(t) == 6
    assert {c.miner_id for c in t.match(Requirements(), Hints(), 10).candidates} == {
        "n1",
        "n3",
        "n5",
        "n7",
        "n9",
        "fresh",
    }
    assert t.match(Requirements(), Hints(), 1).candidates[0].miner_id == "fresh"  # all equal: by id


def test_weights_parse() -> None:
    w = Weights.parse("cap:1,price:0, latency:0.5")
    assert (w.cap, w.price, w.latency, w.trust) == (1.0, 0.0, 0.5, 0.15)
    for bad in ("cap=1", "speed:1", "cap:-1", "cap:x"):
        with pytest.raises(InvalidInput):
            Weights.parse(bad)


node_strategy = st.builds(
    lambda i, gpus, model, price, region, tags, queue, online, trust_, latency: NodeView(
        spec(
            f"m{i:03d}",
            gpus=gpus,
            model=model,
            price=price,
            region=region,
            tags=tags,
            trust=trust_,
            latency_ms=latency,
        ),
        online,
        queue,
    ),
    st.integers(0, 999),
    st.integers(0, 4),
    st.integers(0, 2),
    st.sampled_from([100_000, 500_000, 1_000_000, 2_000_000]),
    st.sampled_from(["eu", "us", None]),
    st.lists(st.sampled_from(["llm", "spot", "secure"]), max_size=2),
    st.integers(0, 2),
    st.booleans(),
    st.sampled_from([0.05, 0.3, 0.5, 0.9]),
    st.sampled_from([None, 50.0, 400.0]),
)
req_strategy = st.builds(
    Requirements,
    min_vram_gb=st.sampled_from([None, 20.0, 40.0, 80.0]),
    gpu_count=st.sampled_from([None, 1, 2, 4]),
    tags_any=st.lists(st.sampled_from(["llm", "spot"]), max_size=1),
    accel=st.lists(st.sampled_from(["h100", "a100", "cpu"]), max_size=1),
)
hints_strategy = st.builds(
    Hints,
    region=st.sampled_from([None, "eu"]),
    max_price=st.sampled_from([None, 600_000]),
    deadline_ms=st.sampled_from([None, 900]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(node_strategy, max_size=30, unique_by=lambda v: v.spec.miner_id),
    req_strategy,
    hints_strategy,
    st.integers(1, 8),
)
def test_vectorised_equals_reference(
    nodes: list[NodeView], req: Requirements, hints: Hints, top_k: int
) -> None:
    t = NodeTable(capacity=4)
    for view in nodes:
        t.upsert(view.spec)
        t.heartbeat(view.spec.miner_id, 0.0, queue_len=view.queue_len)
        t.set_online(view.spec.miner_id, view.online)
    fast = t.match(req, hints, top_k)
    slow = matching.match_reference(nodes, req, hints, top_k)
    assert fast.rejected == slow.rejected
    assert [c.miner_id for c in fast.candidates] == [c.miner_id for c in slow.candidates]
    assert [c.score for c in fast.candidates] == pytest.approx([c.score for c in slow.candidates], abs=1e-9)
    assert fast.explain == slow.explain
