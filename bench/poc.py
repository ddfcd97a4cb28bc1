"""PoC generation speed against the device's practical ceiling, measured in the same run.

For each parameter set: nonces/s and the achieved matrix-product FLOP rate of (a) the forward pass
alone on device-resident inputs and (b) the whole engine (worker process, input generation,
permutation, distance, batches), next to a plain large matrix product on the same device (fp16 on a
GPU, float32 NumPy on the CPU) — the ratio is what the issue's aim (>= 60 % on an H100) is about.
``--agreement`` adds GPU fp16 vs NumPy fp32 distances; ``--nvml`` samples the GPU through our own
NVML reader while the engine runs.

    python bench/poc.py --sets tiny,test                  # CPU, NumPy
    python bench/poc.py --cpu-ratio --sets test,v1,v2     # CPU forward vs NumPy matmuls of its shapes
    python bench/poc.py --sets v1,v2 --device cuda --agreement --nvml --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpupool.core.poc import (
    PARAMS_TEST,
    PARAMS_TINY,
    PARAMS_V1,
    PARAMS_V2,
    ModelParams,
    PocModel,
    flops_per_nonce,
    nonce_inputs,
)
from gpupool.pow.engine import Generator
from gpupool.pow.rounds import PowRound

SETS = {"tiny": PARAMS_TINY, "test": PARAMS_TEST, "v1": PARAMS_V1, "v2": PARAMS_V2}
CHUNKS = {"tiny": [64], "test": [64], "v1": [128, 256], "v2": [32, 64]}
HASH = "5f1a9c3e" * 8
KEY = "02" + "ab" * 31


def ceiling(device: str) -> tuple[str, float]:
    """FLOP/s of a large plain matrix product: fp16 8192^3 on a GPU, float32 NumPy on the CPU."""
    if device == "cpu":
        n = 2048
        a, b = np.random.default_rng(1).standard_normal((2, n, n), dtype=np.float32)
        a @ b
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        return f"numpy f32 matmul {n}^3", 2 * n**3 / statistics.median(times)
    import torch

    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.float16)
    b = torch.randn(n, n, device=device, dtype=torch.float16)
    return f"torch fp16 matmul {n}^3", 2 * n**3 / _cuda_time(lambda: a @ b, reps=20)


def _cuda_time(fn: Any, reps: int) -> float:
    """Median seconds of ``fn`` on the current CUDA stream, timed with events after warm-up."""
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def forward_rate(name: str, params: ModelParams, device: str, chunk: int, compile: bool) -> dict[str, Any]:
    """Nonces/s of the forward pass alone on device-resident inputs (the GPU's share of the work)."""
    model = PocModel.build(HASH, params)
    inputs = nonce_inputs(HASH, KEY, range(chunk), params)
    if device == "cpu":
        model.logits(inputs)
        t0 = time.perf_counter()
        reps = 0
        while time.perf_counter() - t0 < 2.0:
            model.logits(inputs)
            reps += 1
        secs = (time.perf_counter() - t0) / reps
    else:
        import torch

        from gpupool.core.poc_torch import TorchPocModel

        torch._dynamo.reset()  # each configuration compiles afresh, within dynamo's recompile limit
        tm = TorchPocModel(model, device, "float16", compile=compile)
        x = tm.to_device(inputs)
        with torch.inference_mode():
            secs = _cuda_time(lambda: tm.forward(x), reps=5)
        del tm, x
        torch.cuda.empty_cache()
    nps = chunk / secs
    return {
        "set": name,
        "what": f"forward chunk={chunk}{' compiled' if compile else ''}",
        "nonces_per_s": nps,
        "flops": nps * flops_per_nonce(params),
    }


def engine_rate(
    name: str,
    params: ModelParams,
    device: str,
    chunk: int,
    seconds: float,
    compile: bool,
    nvml_log: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """Steady-state nonces/s of the whole engine (worker process, inputs, distances, batches)."""
    spec = PowRound(HASH, 1, KEY, params=params, batch_size=chunk)
    gen = Generator(spec, device=device, compile=compile)
    stop = threading.Event()
    sampler = None
    if nvml_log is not None:
        sampler = threading.Thread(target=_sample_nvml, args=(nvml_log, stop), daemon=True)
    gen.start()
    t_start = time.monotonic()
    try:
        while gen.stats().nonces_computed < 2 * chunk:  # warm-up: model build, compile, first steps
            if gen.status == "error":
                raise RuntimeError(gen.stats().error)
            time.sleep(0.2)
        warm = time.monotonic() - t_start
        if sampler:
            sampler.start()
        s0, t0 = gen.stats(), time.monotonic()
        time.sleep(seconds)
        s1, t1 = gen.stats(), time.monotonic()
    finally:
        stop.set()
        gen.stop()
    nps = (s1.nonces_computed - s0.nonces_computed) / (t1 - t0)
    qps = (s1.nonces_qualified - s0.nonces_qualified) / (t1 - t0)
    return {
        "set": name,
        "what": f"engine chunk={chunk}{' compiled' if compile else ''}",
        "nonces_per_s": nps,
        "qualified_per_s": qps,
        "flops": nps * flops_per_nonce(params),
        "warmup_s": warm,
    }


def _sample_nvml(out: list[dict[str, Any]], stop: threading.Event) -> None:
    from gpupool.node.gpu import open_nvml, read_telemetry

    nvml = open_nvml()
    while not stop.is_set():
        for t in read_telemetry(nvml):
            out.append(
                {
                    "t": time.time(),
                    "index": t.index,
                    "util": t.util_gpu_pct,
                    "mem_used_mib": t.memory_used_mib,
                    "power_w": t.power_draw_w,
                    "sm_mhz": t.clock_sm_mhz,
                    "processes": [(p.pid, p.used_memory_mib) for p in (t.processes or ())],
                }
            )
        time.sleep(1.0)


def agreement(name: str, params: ModelParams, device: str, n: int) -> dict[str, Any]:
    """GPU fp16 vs NumPy fp32 distances for ``n`` nonces, and GPU run-to-run determinism."""
    from gpupool.core.poc import DEFAULT_R_TARGET
    from gpupool.core.poc_torch import TorchPocModel

    model = PocModel.build(HASH, params)
    cpu = model.distances(KEY, range(n), chunk=8)
    tm = TorchPocModel(model, device, "float16")
    gpu_a, gpu_b = tm.distances(KEY, range(n)), tm.distances(KEY, range(n))
    diff = np.abs(gpu_a - cpu)
    flips = int(np.count_nonzero((gpu_a < DEFAULT_R_TARGET) != (cpu < DEFAULT_R_TARGET)))
    return {
        "set": name,
        "nonces": n,
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "qualification_flips": flips,
        "gpu_deterministic": bool(np.array_equal(gpu_a, gpu_b)),
        "dist_cpu_head": cpu[:4].tolist(),
        "dist_gpu_head": gpu_a[:4].tolist(),
    }


RATIO_PLAN = {"test": (None, 64), "v1": (1, 2), "v2": (1, 1)}  # (layers built, None: all; nonces/step)


def layer_matmuls(params: ModelParams, chunk: int) -> list[tuple[int, int, int, int]]:
    """(batch, m, k, n) of each matrix product of one layer for ``chunk`` nonces, as ``flops_per_nonce``."""
    rows, d, s, h = chunk * params.seq_len, params.dim, params.seq_len, params.n_heads
    kv, hd, ffn = params.n_kv_heads * params.head_dim, params.head_dim, params.ffn_hidden_dim
    return [
        (1, rows, d, d),  # q
        (1, rows, d, kv),  # k
        (1, rows, d, kv),  # v
        (chunk * h, s, hd, s),  # scores
        (chunk * h, s, s, hd),  # weighted values
        (1, rows, d, d),  # o
        (1, rows, d, ffn),  # w1
        (1, rows, d, ffn),  # w3
        (1, rows, ffn, d),  # w2
    ]


def _paired_medians(f: Any, g: Any, budget_s: float, at_least: int = 4) -> tuple[float, float]:
    """Median seconds of ``f`` and ``g`` timed alternately, so both see the same load on a shared box."""
    f(), g()
    tf: list[float] = []
    tg: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(tf) < at_least or time.perf_counter() < t_end:
        for fn, out in ((f, tf), (g, tg)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(tf), statistics.median(tg)


def cpu_ratio(name: str, params: ModelParams, budget_s: float) -> dict[str, Any]:
    """The NumPy forward against plain NumPy float32 matmuls of exactly its shapes, in the same run.

    ``v1``/``v2`` do not fit this machine whole (12 GB / 71 GB of float32 weights), and every layer has
    the same shapes, so the forward of ``layers`` layers (plus the output projection) is measured and
    nonces/s is scaled to the full depth (which slightly overstates the output's share: conservative).
    """
    layers, chunk = RATIO_PLAN[name]
    built = dataclasses.replace(params, n_layers=layers or params.n_layers)
    model = PocModel.build(HASH, built)
    inputs = nonce_inputs(HASH, KEY, range(chunk), built)
    rng = np.random.default_rng(3)
    plan = layer_matmuls(built, chunk) * built.n_layers + [(1, chunk, built.dim, built.vocab_size)]
    operands = {
        shape: (
            rng.standard_normal(shape[:3], dtype=np.float32),
            rng.standard_normal((shape[0], shape[2], shape[3]), dtype=np.float32),
        )
        for shape in set(plan)
    }
    t_fwd, t_mm = _paired_medians(
        lambda: model.logits(inputs), lambda: [np.matmul(*operands[shape]) for shape in plan], budget_s
    )
    flops_built = chunk * flops_per_nonce(built)
    scale = params.n_layers / built.n_layers
    nps = chunk / (t_fwd * scale)
    return {
        "set": name,
        "layers_built": built.n_layers,
        "chunk": chunk,
        "nonces_per_s": nps,
        "flops": nps * flops_per_nonce(params),
        "matmul_flops": flops_built / t_mm,
        "ratio": t_mm / t_fwd,
    }


def run_cpu_ratio(names: list[str], budget_s: float) -> list[dict[str, Any]]:
    label, peak = ceiling("cpu")
    print(f"reference: {label}: {peak / 1e9:.1f} GFLOP/s", flush=True)
    rows = []
    for name in names:
        rows.append(cpu_ratio(name, SETS[name], budget_s))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\nNumPy PoC forward vs NumPy f32 matmuls of the same shapes, same run ({os.cpu_count()} CPUs)")
    print(
        f"{'set':5} {'layers':>6} {'chunk':>5} {'nonces/s':>10} {'GFLOP/s':>8} "
        f"{'matmul GFLOP/s':>14} {'ratio':>6}"
    )
    for r in rows:
        print(
            f"{r['set']:5} {r['layers_built']:6} {r['chunk']:5} {r['nonces_per_s']:10.4g} "
            f"{r['flops'] / 1e9:8.1f} {r['matmul_flops'] / 1e9:14.1f} {r['ratio']:6.1%}"
        )
    print(f"{'':5} {'square matmul 2048^3':>46} {peak / 1e9:8.1f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="tiny,test")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda:0)")
    ap.add_argument("--seconds", type=float, default=10.0, help="engine measuring window per set")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile'd layers")
    ap.add_argument("--agreement", type=int, default=0, metavar="N", help="compare N nonces GPU vs CPU")
    ap.add_argument("--nvml", action="store_true", help="sample NVML telemetry during the engine runs")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--cpu-ratio", action="store_true", help="NumPy forward vs same-shape NumPy matmuls")
    args = ap.parse_args()
    device = "cuda:0" if args.device == "cuda" else args.device
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    if args.cpu_ratio:
        rows = run_cpu_ratio(names, budget_s=min(args.seconds, 5.0))
        if args.json:
            args.json.write_text(
                json.dumps({"device": "cpu", "rows": rows, "cpus": os.cpu_count()}, indent=1)
            )
        return

    label, peak = ceiling(device)
    print(f"ceiling: {label}: {peak / 1e9:.1f} GFLOP/s", flush=True)
    rows: list[dict[str, Any]] = []
    agree: list[dict[str, Any]] = []
    nvml_log: list[dict[str, Any]] | None = [] if args.nvml else None
    for name in names:
        params = SETS[name]
        t0 = time.perf_counter()
        PocModel.build(HASH, params)
        print(
            f"{name}: {flops_per_nonce(params) / 1e9:.2f} GFLOP/nonce, "
            f"host build {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        compiles = [False, True] if args.compile and device != "cpu" else [False]
        chunks = CHUNKS[name] if device != "cpu" else CHUNKS[name][:1]
        for compile in compiles:
            for chunk in chunks:
                rows.append(forward_rate(name, params, device, chunk, compile))
                print(_fmt(rows[-1], peak), flush=True)
        best = max((r for r in rows if r["set"] == name), key=lambda r: r["nonces_per_s"])
        best_chunk = int(best["what"].split("chunk=")[1].split()[0])
        rows.append(
            engine_rate(
                name,
                params,
                device if device == "cpu" else "cuda",
                best_chunk,
                args.seconds,
                "compiled" in best["what"],
                nvml_log,
            )
        )
        print(_fmt(rows[-1], peak), flush=True)
        if args.agreement and device != "cpu" and name != "v2":
            agree.append(agreement(name, params, device, args.agreement))
            print(json.dumps(agree[-1]), flush=True)

    print(f"\nPoC generation on {device} vs {label} ({peak / 1e9:,.0f} GFLOP/s), same run")
    print(
        f"{'set':5} {'measured':28} {'nonces/s':>12} {'qualifying/s':>13} {'GFLOP/s':>10} {'of ceiling':>10}"
    )
    for r in rows:
        print(_fmt(r, peak))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "device": device,
                    "ceiling": {"label": label, "flops": peak},
                    "rows": rows,
                    "agreement": agree,
                    "nvml": nvml_log,
                    "cpus": os.cpu_count(),
                },
                indent=1,
            )
        )


def _fmt(r: dict[str, Any], peak: float) -> str:
    q = r.get("qualified_per_s")
    return (
        f"{r['set']:5} {r['what']:28} {r['nonces_per_s']:12.1f} {'' if q is None else f'{q:13.2f}':>13} "
        f"{r['flops'] / 1e9:10,.0f} {r['flops'] / peak:10.1%}"
    )


if __name__ == "__main__":
    main()
