"""``gpupool api-key create|ls|revoke``: an owner's own API keys (SPEC §8.2), for AITBC-style miners."""

from __future__ import annotations

import datetime
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from gpupool.cli import output
from gpupool.cli.user_cmds import HubOpt, reporting, session

api_key_app = typer.Typer(no_args_is_help=True, help="Your own API keys, for miners that cannot sign.")


@api_key_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="A label to tell your keys apart")] = "",
    owner: Annotated[
        str | None, typer.Option(help="Account paid for the nodes' work: an 0x address [default: you]")
    ] = None,
    hub: HubOpt = None,
) -> None:
    """Make a key; it is shown this once (the hub keeps only its hash)."""
    with reporting(), session(hub) as (client, _saved):
        made = client.create_api_key(name, owner)
    output.info(f"API key {made['id']} for {made['owner']} (shown once, keep it safe):")
    typer.echo(made["key"])


@api_key_app.command("ls")
def list_keys(hub: HubOpt = None) -> None:
    """Your keys, revoked ones included (never the keys themselves)."""
    with reporting(), session(hub) as (client, _saved):
        keys = client.api_keys()
    if not keys:
        output.info("No API keys yet: gpupool api-key create")
        return
    table = Table(title=Text("API keys"))
    for column in ("id", "name", "owner", "created", "revoked"):
        table.add_column(column)
    for k in keys:
        table.add_row(
            Text(k["id"]), Text(k["name"]), Text(k["owner"]), _when(k["created_at"]), _when(k["revoked_at"])
        )
    output.print_table(table)


@api_key_app.command("revoke")
def revoke(key_id: str, hub: HubOpt = None) -> None:
    """Revoke a key: nodes registered with it can no longer heartbeat with it."""
    with reporting(), session(hub) as (client, _saved):
        client.revoke_api_key(key_id)
    output.info(f"Revoked {key_id}.")


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")
