"""``gpupool poc …``: PoC distances for cross-checking implementations (SPEC §7), and the hub's rounds."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from gpupool import crypto
from gpupool.cli import credentials, output
from gpupool.cli.credentials import CredentialsError
from gpupool.cli.user_cmds import EXIT_API, EXIT_USAGE, HubOpt, fail, reporting, resolve_hub, session
from gpupool.client import Client
from gpupool.core import poc
from gpupool.errors import InvalidInput

poc_app = typer.Typer(no_args_is_help=True, help="Proof of compute: distances, rounds, results.")

PARAMS = poc.PARAMS_BY_NAME
MAX_NONCES = 1_000_000


def parse_nonces(text: str) -> list[int]:
    """``0-63``, ``1,5,9`` or a mix (``0-9,20-29``): non-negative integers, in the order given."""
    nonces: list[int] = []
    for part in text.split(","):
        piece = part.strip()
        low, dash, high = piece.partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise InvalidInput(f"bad nonce range {piece!r}; use e.g. 0-63 or 1,5,9", field="nonces") from None
        if first < 0 or last < first:
            raise InvalidInput(f"bad nonce range {piece!r}: need 0 <= start <= end", field="nonces")
        if len(nonces) + (last - first + 1) > MAX_NONCES:
            raise InvalidInput(f"at most {MAX_NONCES} nonces at a time", field="nonces")
        nonces.extend(range(first, last + 1))
    return nonces


def distances(
    block_hash: str, public_key: str, nonces: list[int], params: poc.ModelParams, device: str, dtype: str
) -> list[float]:
    """NumPy for float32 on the CPU; torch (imported only here) for cuda or float16."""
    model = poc.PocModel.build(block_hash, params)
    if device == "cpu" and dtype == "float32":
        return [float(d) for d in model.distances(public_key, nonces)]
    from gpupool.core import poc_torch

    if not poc_torch.torch_available():
        fail(f"--device {device} --dtype {dtype} needs PyTorch, which is not installed", EXIT_API)
    if device == "cuda":
        import torch  # type: ignore[import-not-found,unused-ignore]

        if not torch.cuda.is_available():
            fail("--device cuda: PyTorch sees no CUDA device on this machine", EXIT_API)
    return [float(d) for d in poc_torch.TorchPocModel(model, device, dtype).distances(public_key, nonces)]


@poc_app.command("dist")
def dist(
    block_hash: Annotated[str, typer.Option("--block-hash", help="The round's block hash")],
    public_key: Annotated[
        str,
        typer.Option("--public-key", help="66-hex compressed, base64 of 33 bytes, 64-hex x-only, or npub"),
    ],
    nonces: Annotated[str, typer.Option("--nonces", help="e.g. 0-63 or 1,5,9")],
    params: Annotated[str, typer.Option("--params", help="v1, v2, test or tiny")] = "v1",
    device: Annotated[str, typer.Option("--device", help="cpu or cuda")] = "cpu",
    dtype: Annotated[
        str | None, typer.Option("--dtype", help="float32 or float16 [cpu: float32, cuda: float16]")
    ] = None,
) -> None:
    """Print ``{"params", "nonces", "dist"}`` as JSON: the PoC distances of those nonces (SPEC §7)."""
    if params not in PARAMS:
        fail(f"--params must be one of {', '.join(PARAMS)}, got {params!r}", EXIT_USAGE)
    if device not in ("cpu", "cuda"):
        fail(f"--device must be cpu or cuda, got {device!r}", EXIT_USAGE)
    dtype = dtype or ("float16" if device == "cuda" else "float32")
    if dtype not in ("float32", "float16"):
        fail(f"--dtype must be float32 or float16, got {dtype!r}", EXIT_USAGE)
    if not block_hash.strip() or not public_key.strip():
        fail("--block-hash and --public-key must not be empty", EXIT_USAGE)
    try:
        public_key = crypto.poc_public_key(public_key, field="public_key")  # kept as given (SPEC §8.3)
        wanted = parse_nonces(nonces)
    except InvalidInput as exc:
        fail(exc.message, EXIT_USAGE)
    out = distances(block_hash, public_key, wanted, PARAMS[params], device, dtype)
    sys.stdout.write(json.dumps({"params": PARAMS[params].to_dict(), "nonces": wanted, "dist": out}) + "\n")


@contextmanager
def _public(hub: str | None) -> Iterator[Client]:
    """A client for public routes: the logged-in hub by default, no login needed."""
    try:
        saved = credentials.load()
    except CredentialsError:
        saved = None
    with Client(resolve_hub(hub, saved)) as client:
        yield client


def _round_table(rnd: dict[str, Any]) -> None:
    table = Table(title=Text(f"PoC round {rnd['block_height']} ({rnd['status']})"), show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in (
        "block_hash",
        "params_name",
        "r_target",
        "fraud_threshold",
        "batch_size",
        "opened_at",
        "closes_at",
    ):
        table.add_row(key, Text(str(rnd.get(key))))
    table.add_row("params", Text(json.dumps(rnd["params"])))
    output.print_table(table)


@poc_app.command("round")
def current_round(hub: HubOpt = None) -> None:
    """Show the hub's open PoC round (what nodes work on now)."""
    with reporting(), _public(hub) as client:
        _round_table(client.poc_round())


@poc_app.command("open-round")
def open_round(
    params: Annotated[str, typer.Option("--params", help="v1, v2, test or tiny")] = "v1",
    r_target: Annotated[
        float | None, typer.Option("--r-target", help="[default: 1.4013564660458173]")
    ] = None,
    duration: Annotated[
        int | None, typer.Option("--duration", min=1, help="Seconds [default: POC_ROUND_SEC]")
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    hub: HubOpt = None,
) -> None:
    """Open the next PoC round with a fresh block hash (admin)."""
    if params not in PARAMS:
        fail(f"--params must be one of {', '.join(PARAMS)}, got {params!r}", EXIT_USAGE)
    with reporting(), session(hub) as (client, _saved):
        _round_table(
            client.open_poc_round(params, r_target=r_target, duration_sec=duration, batch_size=batch_size)
        )


@poc_app.command("close-round")
def close_round(height: Annotated[int, typer.Argument(min=1)], hub: HubOpt = None) -> None:
    """Close a round now and validate its batches (admin); prints the verdicts."""
    with reporting(), session(hub) as (client, _saved):
        _results_table(client.close_poc_round(height))


@poc_app.command("results")
def results(height: Annotated[int, typer.Argument(min=1)], hub: HubOpt = None) -> None:
    """Each node's verdict and weight for a validated round."""
    with reporting(), _public(hub) as client:
        _results_table(client.poc_results(height))


def _results_table(rnd: dict[str, Any]) -> None:
    rows = rnd.get("results") or []
    if not rows:
        state = "not validated yet" if rnd["status"] != "validated" else "validated: no node submitted"
        output.info(f"PoC round {rnd['block_height']} ({state}).")
        return
    table = Table(title=Text(f"PoC round {rnd['block_height']}: {len(rows)} nodes"))
    for column, justify in (
        ("miner", "left"),
        ("nonces", "right"),
        ("sampled", "right"),
        ("invalid", "right"),
        ("p-value", "right"),
        ("verdict", "left"),
        ("weight", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        verdict = Text("FRAUD", style="bold red") if r["fraud"] else Text("valid", style="green")
        table.add_row(
            Text(r["miner_id"]),
            str(r["n_nonces"]),
            str(r["n_sampled"]),
            str(r["n_invalid"]),
            f"{r['p_value']:.3g}",
            verdict,
            str(r["weight"]),
        )
    output.print_table(table)
