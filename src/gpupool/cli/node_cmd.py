"""``gpupool node``: the node agent; every flag mirrors an environment variable (SPEC §7)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gpupool.config import NodeSettings
from gpupool.errors import GpupoolError


def node(
    registry_url: Annotated[str | None, typer.Option(help="Hub URL [env REGISTRY_URL]")] = None,
    owner_address: Annotated[str | None, typer.Option(help="Owner's 0x address [env OWNER_ADDRESS]")] = None,
    node_type: Annotated[str | None, typer.Option(help="[env NODE_TYPE, default node-H100x1]")] = None,
    listen_addr: Annotated[str | None, typer.Option(help="[env LISTEN_ADDR, default 0.0.0.0:8080]")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Key and state [env DATA_DIR, default ./data]")
    ] = None,
    dstack_url: Annotated[
        str | None, typer.Option(help="GPU inventory from a DStack service [env DSTACK_BACKEND_DSTACK_URL]")
    ] = None,
    fake_nvml: Annotated[
        Path | None, typer.Option(help="Replay recorded NVML readings [env GPUPOOL_NODE_FAKE_NVML]")
    ] = None,
    miner_id: Annotated[str | None, typer.Option(help="[env GPUPOOL_NODE_MINER_ID]")] = None,
    advertise_addr: Annotated[
        str | None, typer.Option(help="host:port [env GPUPOOL_NODE_ADVERTISE_ADDR]")
    ] = None,
    price: Annotated[
        str | None,
        typer.Option(help="Tokens per 1000 GPU-seconds, e.g. 0.75 [env PRICE_TOKEN_PER_KSEC]"),
    ] = None,
    price_micro_per_ksec: Annotated[
        int | None,
        typer.Option(help="The same in micro-units [env GPUPOOL_NODE_PRICE_MICRO_PER_KSEC]"),
    ] = None,
    max_parallel: Annotated[int | None, typer.Option(help="[env GPUPOOL_NODE_MAX_PARALLEL]")] = None,
    max_bundle_unpacked_bytes: Annotated[
        int | None,
        typer.Option(help="A task bundle unpacks to at most [env GPUPOOL_NODE_MAX_BUNDLE_UNPACKED_BYTES]"),
    ] = None,
    max_bundle_files: Annotated[
        int | None, typer.Option(help="Files in a task bundle, at most [env GPUPOOL_NODE_MAX_BUNDLE_FILES]")
    ] = None,
    region: Annotated[str | None, typer.Option(help="[env GPUPOOL_NODE_REGION]")] = None,
    tags: Annotated[str | None, typer.Option(help="Comma-separated [env GPUPOOL_NODE_TAGS]")] = None,
    capabilities: Annotated[
        str | None, typer.Option(help="Comma-separated [env GPUPOOL_NODE_CAPABILITIES]")
    ] = None,
    api_key: Annotated[str | None, typer.Option(help="Owner API key [env GPUPOOL_NODE_API_KEY]")] = None,
    backoff_max_sec: Annotated[float | None, typer.Option(help="[env GPUPOOL_NODE_BACKOFF_MAX_SEC]")] = None,
    log_level: Annotated[str | None, typer.Option(help="[env GPUPOOL_NODE_LOG_LEVEL]")] = None,
    delegation_url: Annotated[
        str | None, typer.Option(help="Big node for PoC generation [env DELEGATION_URL]")
    ] = None,
    delegation_auth_token: Annotated[
        str | None, typer.Option(help="Its shared token [env DELEGATION_AUTH_TOKEN]")
    ] = None,
    delegation_poll_sec: Annotated[
        float | None, typer.Option(help="Poll period [env DELEGATION_POLL_SEC, default 5]")
    ] = None,
    poc_device: Annotated[
        str | None, typer.Option(help="Local PoC: auto|cpu|cuda [env GPUPOOL_NODE_POC_DEVICE]")
    ] = None,
    mlnode_api: Annotated[
        bool | None,
        typer.Option(
            "--mlnode-api/--no-mlnode-api",
            help="Gonka's MLNode API for other keys [env GPUPOOL_NODE_MLNODE_API, default off]",
        ),
    ] = None,
    mlnode_allow_cidrs: Annotated[
        str | None,
        typer.Option(
            help="Callers allowed with it on [env GPUPOOL_NODE_MLNODE_ALLOW_CIDRS, default loopback]"
        ),
    ] = None,
    print_inventory: Annotated[bool, typer.Option(help="Print the GPU table and exit")] = False,
) -> None:
    """Run the node agent: register with the hub, heartbeat, serve /health. Flags override the env."""
    from gpupool.node import agent

    given = dict(locals())
    overrides: dict[str, Any] = {
        ("price_token_per_ksec" if k == "price" else k): v
        for k, v in given.items()
        if k in _SETTING_FLAGS and v is not None
    }
    try:
        settings = NodeSettings(**overrides)
    except ValueError as exc:
        typer.secho(f"Error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(agent.EXIT_CONFIG) from exc
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    if print_inventory:
        _print_inventory(settings)
        return
    raise typer.Exit(asyncio.run(agent.serve(settings)))


_SETTING_FLAGS = {
    "registry_url",
    "owner_address",
    "node_type",
    "listen_addr",
    "data_dir",
    "dstack_url",
    "fake_nvml",
    "miner_id",
    "advertise_addr",
    "price",
    "price_micro_per_ksec",
    "max_parallel",
    "max_bundle_unpacked_bytes",
    "max_bundle_files",
    "region",
    "tags",
    "capabilities",
    "api_key",
    "backoff_max_sec",
    "log_level",
    "delegation_url",
    "delegation_auth_token",
    "delegation_poll_sec",
    "poc_device",
    "mlnode_api",
    "mlnode_allow_cidrs",
}


def _print_inventory(settings: NodeSettings) -> None:
    from gpupool.node import gpu
    from gpupool.node.dstack import fetch_dstack_inventory

    try:
        if settings.dstack_url:
            inv = fetch_dstack_inventory(settings.dstack_url)
        else:
            inv = gpu.read_inventory(gpu.open_nvml(settings.fake_nvml))
    except GpupoolError as exc:
        typer.secho(f"Error: {exc.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    console = Console(highlight=False)
    console.print(
        f"{inv.kind.upper()} node ({inv.source}): {inv.cpu_cores} cores / {inv.cpu_threads} threads, "
        f"{inv.ram_gb} GB RAM; driver {inv.driver_version or '-'}, CUDA {inv.cuda_version or '-'}"
    )
    if inv.detail:
        console.print(inv.detail)
    if not inv.gpus:
        return
    table = Table()
    for column in ("#", "name", "uuid", "VRAM GB", "CC", "util %", "used MiB", "temp °C", "power W", "MIG"):
        table.add_column(column)
    for g in inv.gpus:
        t = g.telemetry
        table.add_row(
            str(g.index),
            g.name,
            g.uuid or "-",
            f"{g.vram_gb}" if g.vram_gb is not None else "-",
            g.compute_capability or "-",
            _fmt(t.util_gpu_pct if t else None),
            _fmt(t.memory_used_mib if t else None),
            _fmt(t.temperature_c if t else None),
            _fmt(t.power_draw_w if t else None),
            "on" if g.mig_enabled else "off",
        )
    console.print(table)


def _fmt(value: object) -> str:
    return "-" if value is None else str(value)
