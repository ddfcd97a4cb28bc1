"""``gpupool poc status``: a node's PoC generation as its ``GET /api/v1/pow/status`` reports it.

Registered on ``poc_cmds.poc_app`` in ``cli/app.py``; it talks to a node, not to the hub.
"""

from __future__ import annotations

from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table


def status(
    node: Annotated[str, typer.Option("--node", help="The node's API URL")] = "http://127.0.0.1:8080",
    json_out: Annotated[bool, typer.Option("--json", help="Print the raw JSON")] = False,
) -> None:
    """Show a node's PoC status: mode, GPUs, throughput (nonces/s, qualifying nonces/s), submissions."""
    try:
        resp = httpx.get(f"{node.rstrip('/')}/api/v1/pow/status", timeout=10)
        resp.raise_for_status()
        data = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        typer.secho(f"Error: cannot read {node}/api/v1/pow/status: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    if json_out:
        typer.echo(resp.text)
        return
    table = Table(show_header=False)
    table.add_column("field")
    table.add_column("value")
    for key, value in data.items():
        if isinstance(value, float):
            value = f"{value:,.3f}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        table.add_row(key, "-" if value is None else str(value))
    Console(highlight=False).print(table)
