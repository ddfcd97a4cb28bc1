"""``gpupool verify-receipt FILE``: check a hub receipt offline against the hub's public key.

A reward payout's receipt is the hub's signed epoch root plus the payout's Merkle inclusion proof
(``gpupool.receipts``); a plain hub-signed event (kind 21006) is checked as such.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import httpx
import typer

from gpupool import crypto, receipts
from gpupool.cli import output
from gpupool.errors import GpupoolError


def verify_receipt(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="A receipt (JSON) as the hub returned it")
    ],
    hub_pubkey: Annotated[
        str | None, typer.Option(help="The hub's key (hex or npub); else fetched from --hub's /v1/health")
    ] = None,
    hub: Annotated[str | None, typer.Option(envvar="GPUPOOL_HUB_URL", help="Hub to ask for its key")] = None,
) -> None:
    """Exit 0 when the receipt was signed by the hub and is unaltered; 1 otherwise."""
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        output.error(f"{file} is not a JSON receipt: {exc}")
        raise typer.Exit(2) from exc
    # A file holds a receipt, or a payout as the hub returned it (the receipt under "receipt").
    inner = data.get("receipt") if isinstance(data, dict) else None
    receipt = inner if isinstance(inner, dict) else data
    key = hub_pubkey
    if key is None:
        if hub is None:
            output.error("give --hub-pubkey, or --hub to read the key from the hub's /v1/health")
            raise typer.Exit(2)
        try:
            key = str(httpx.get(f"{hub.rstrip('/')}/v1/health", timeout=10).json()["hub_pubkey"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            output.error(f"could not read the hub's key from {hub}/v1/health: {exc}")
            raise typer.Exit(2) from exc
    try:
        payload = receipts.verify_any(receipt, key)
    except GpupoolError as exc:
        output.error(f"receipt does NOT verify: {exc.message} ({exc.code})")
        raise typer.Exit(1) from exc
    output.info(f"receipt verified: signed by hub {crypto.normalize_pubkey(key)}")
    output.info(json.dumps(payload, sort_keys=True))
