"""``gpupool delegate serve``: the big node's delegation service (SPEC §5), port 9090 by default."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from gpupool.config import DelegationSettings

delegate_app = typer.Typer(
    no_args_is_help=True, help="Delegation: a big node generating PoC for small nodes."
)

EXIT_CONFIG = 2


@delegate_app.command("serve")
def serve_cmd(
    host: Annotated[
        str | None, typer.Option(help="Bind address [env DELEGATION_HOST, default 0.0.0.0]")
    ] = None,
    port: Annotated[int | None, typer.Option(help="[env DELEGATION_PORT, default 9090]")] = None,
    max_sessions: Annotated[
        int | None, typer.Option(help="[env DELEGATION_MAX_SESSIONS, default 10]")
    ] = None,
    max_active: Annotated[
        int | None,
        typer.Option(help="Sessions generating at once, others wait [env DELEGATION_MAX_ACTIVE, 0 = all]"),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto|cpu|cuda [env DELEGATION_DEVICE]")] = None,
) -> None:
    """Serve /api/v1/delegation/*; DELEGATION_AUTH_TOKEN is required (the small nodes share it)."""
    from gpupool.delegation.app import create_delegation_app
    from gpupool.serving import serve

    given = {
        "host": host,
        "port": port,
        "max_sessions": max_sessions,
        "max_active": max_active,
        "device": device,
    }
    try:
        settings = DelegationSettings(**{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]
        settings.token()
    except ValueError as exc:
        typer.secho(f"Error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(EXIT_CONFIG) from exc
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    typer.echo(
        f"gpupool delegation service on http://{settings.host}:{settings.port} "
        f"(max {settings.max_sessions} sessions, {settings.active_limit} generating at once, "
        f"sessions expire after {settings.session_ttl_sec:g} s)"
    )
    serve(create_delegation_app(settings), settings.host, settings.port, settings.log_level)
