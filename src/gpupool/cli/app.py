"""The ``gpupool`` command line: a typer app; every command is a thin adapter over a service or the SDK."""

from __future__ import annotations

import typer

from gpupool.cli import node_cmds, poc_cmds, pow_cmds, task_cmds, user_cmds
from gpupool.cli.api_key_cmds import api_key_app
from gpupool.cli.delegate_cmd import delegate_app
from gpupool.cli.hub_cmd import hub
from gpupool.cli.node_cmd import node
from gpupool.cli.receipt_cmd import verify_receipt
from gpupool.cli.up_cmd import up

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="gpupool: a decentralized GPU compute pool."
)


@app.callback()
def _root() -> None:
    """gpupool: a decentralized GPU compute pool."""


app.command("hub", help="Run the hub: HTTP + WebSocket API, scheduler, ledger.")(hub)
app.command("node", help="Run the node agent: register, heartbeat, serve /health.")(node)
app.command("up", help="Start the hub and one local node (single machine, embedded SQLite).")(up)
app.command("login")(user_cmds.login)
app.command("logout")(user_cmds.logout)
app.command("whoami")(user_cmds.whoami)
app.command("balance")(user_cmds.balance)
app.command("transfer", context_settings=user_cmds.AMOUNT_CONTEXT)(user_cmds.transfer)
app.command("transfers")(user_cmds.transfers)
app.command("nodes")(node_cmds.nodes)
app.command("match")(node_cmds.match)
app.add_typer(user_cmds.admin_app, name="admin")
app.add_typer(api_key_app, name="api-key")
app.add_typer(task_cmds.task_app, name="task")
poc_cmds.poc_app.command("status")(pow_cmds.status)  # a node's generation, beside the hub's rounds
app.add_typer(poc_cmds.poc_app, name="poc")
app.command("verify-receipt")(verify_receipt)
app.add_typer(delegate_app, name="delegate")


def main() -> None:
    app()
