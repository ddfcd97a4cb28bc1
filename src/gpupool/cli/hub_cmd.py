"""``gpupool hub``: build the hub from settings (flags override the environment) and serve it."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from gpupool.config import HubSettings
from gpupool.serving import serve


def hub(
    host: Annotated[
        str | None, typer.Option(help="Bind address [env GPUPOOL_HUB_HOST, default 127.0.0.1]")
    ] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port [env GPUPOOL_HUB_PORT, default 8203]")] = None,
    grpc_port: Annotated[
        int | None, typer.Option(help="gRPC port, 0: any free one [env GPUPOOL_HUB_GRPC_PORT, default 50051]")
    ] = None,
    db_url: Annotated[
        str | None,
        typer.Option(
            "--db-url", help="Database URL [env GPUPOOL_DB_URL, default sqlite:///./data/gpupool.db]"
        ),
    ] = None,
) -> None:
    from gpupool.main import build_app

    given = {"host": host, "port": port, "grpc_port": grpc_port, "db_url": db_url}
    overrides = {k: v for k, v in given.items() if v is not None}
    try:
        settings = HubSettings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        typer.secho(f"Error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # Port 0: the real one is known once bound; the hub prints it then (api/app.py).
    announce = settings.grpc_enabled and settings.grpc_port != 0
    grpc = f", gRPC on {settings.host}:{settings.grpc_port}" if announce else ""
    database = _safe_url(settings.db_url)
    typer.echo(f"gpupool hub on http://{settings.host}:{settings.port}{grpc}  (database: {database})")
    serve(build_app(settings), settings.host, settings.port, settings.log_level)


def _safe_url(url: str) -> str:
    """The database URL without its password, fit for a console line."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
