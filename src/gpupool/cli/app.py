"""The ``gpupool`` command line: a typer app; every command is a thin adapter over a service or the SDK."""

from __future__ import annotations

import typer

from gpupool.cli.hub_cmd import hub

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="gpupool: a decentralized GPU compute pool."
)


@app.callback()
def _root() -> None:
    """gpupool: a decentralized GPU compute pool."""


app.command("hub", help="Run the hub: HTTP + WebSocket API, scheduler, ledger.")(hub)


def main() -> None:
    app()
