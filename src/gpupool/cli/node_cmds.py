"""``gpupool nodes`` (the pool's nodes, for admins) and ``gpupool match`` (for coordinators)."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from gpupool.cli import output
from gpupool.cli.user_cmds import HubOpt, reporting, resolve_hub, session
from gpupool.client import Client, format_amount, parse_amount


def _gpus(gpus: list[dict[str, Any]]) -> str:
    if not gpus:
        return "CPU"
    names: dict[str, int] = {}
    for g in gpus:
        label = f"{str(g['name']).removeprefix('NVIDIA ')} {g['vram_gb']:g}GB"
        names[label] = names.get(label, 0) + 1
    return ", ".join(f"{n} x {label}" for label, n in names.items())


def _ago(ts: float) -> str:
    seconds = max(0, int(time.time() - ts))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def nodes(
    status: Annotated[str | None, typer.Option(help="online or offline [default: all]")] = None,
    page: Annotated[int, typer.Option(min=1)] = 1,
    page_size: Annotated[int, typer.Option(min=1, max=500)] = 50,
    hub: HubOpt = None,
) -> None:
    """List the pool's nodes with their GPUs, price, trust and when they were last heard from (admin)."""
    with reporting(), session(hub) as (client, _saved):
        listing = client.miners(status, page, page_size)
    items = listing["items"]
    if not items:
        output.info("No nodes registered yet." if page == 1 else "No nodes on this page.")
        return
    table = Table(title=Text(f"Nodes ({listing['total']} in all, page {page})"))
    for column, justify in (
        ("miner", "left"),
        ("status", "left"),
        ("GPUs", "left"),
        ("region", "left"),
        ("price/ksec", "right"),
        ("trust", "right"),
        ("queue", "right"),
        ("last seen", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for m in items:
        telemetry = m.get("telemetry") or {}
        table.add_row(
            Text(m["miner_id"]),
            Text(m["status"], style="green" if m["status"] == "online" else "red"),
            Text(_gpus(m["gpus"])),
            Text(m.get("region") or "-"),
            format_amount(int(m["price_micro_per_ksec"])),
            f"{m['trust']:.2f}",
            f"{telemetry.get('queue_len', 0)}/{m['max_parallel']}",
            _ago(float(m["last_seen"])),
        )
    output.print_table(table)


def match(
    min_vram_gb: Annotated[float | None, typer.Option("--vram", help="Minimum VRAM per GPU, GB")] = None,
    gpu_count: Annotated[int | None, typer.Option("--gpus", min=0, help="GPUs needed")] = None,
    min_ram_gb: Annotated[float | None, typer.Option("--ram", help="Minimum RAM, GB")] = None,
    accel: Annotated[list[str] | None, typer.Option(help="GPU model, e.g. h100 (repeatable)")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Any of these tags (repeatable)")] = None,
    capability: Annotated[list[str] | None, typer.Option(help="Any of these capabilities")] = None,
    region: Annotated[str | None, typer.Option(help="Only this region")] = None,
    max_price: Annotated[str | None, typer.Option(help="Tokens per 1000 GPU-seconds, at most")] = None,
    top_k: Annotated[int, typer.Option(min=1, max=100)] = 3,
    job_id: Annotated[str | None, typer.Option(help="[default: a new id]")] = None,
    secret: Annotated[
        str | None, typer.Option(envvar="COORDINATOR_SHARED_SECRET", help="Coordinator shared secret")
    ] = None,
    hub: HubOpt = None,
) -> None:
    """Ask the hub which nodes fit a job best (coordinator or admin login, or the shared secret)."""
    with reporting():
        request: dict[str, Any] = {
            "job_id": job_id or f"cli-{uuid.uuid4().hex[:12]}",
            "requirements": {
                "min_vram_gb": min_vram_gb,
                "min_ram_gb": min_ram_gb,
                "gpu_count": gpu_count,
                "accel": accel or [],
                "tags_any": tag or [],
                "capabilities_any": capability or [],
            },
            "hints": {"region": region, "max_price_micro": parse_amount(max_price) if max_price else None},
            "top_k": top_k,
        }
        if secret:
            with Client(resolve_hub(hub, None)) as client:
                result = client.match(request, coordinator_secret=secret)
        else:
            with session(hub) as (client, _saved):
                result = client.match(request)
    _print_match(result)


def _print_match(result: dict[str, Any]) -> None:
    table = Table(title=Text(f"Candidates for {result['job_id']}"))
    for column in ("#", "miner", "score", "price/ksec", "eta ms", "address"):
        table.add_column(column, justify="left" if column in ("miner", "address") else "right")
    for rank, c in enumerate(result["candidates"], 1):
        table.add_row(
            str(rank),
            Text(c["miner_id"]),
            f"{c['score']:.3f}",
            format_amount(int(c["price_micro"])),
            f"{c['eta_ms']:.0f}",
            Text(f"{c['proto']}://{c['addr']}"),
        )
    if result["candidates"]:
        output.print_table(table)
    else:
        output.info("No node fits.")
    output.info(result["explain"])
    if result["rejected"]:
        output.info("Filtered out: " + ", ".join(f"{k} {v}" for k, v in sorted(result["rejected"].items())))
