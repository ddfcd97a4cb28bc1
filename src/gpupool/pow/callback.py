"""Deliveries to a Gonka API node's callback base (SPEC §8.3): ``{url}/generated`` and ``{url}/validated``.

Gonka's decentralized-api gives its ML node a ``url`` in every init request (``…/v1/poc-batches``); the ML
node posts each ``ProofBatch`` to ``{url}/generated`` and each ``ValidatedBatch`` to ``{url}/validated``
and retries what failed. Here a delivery is one body at a time, in order: the head is retried with
backoff until the API node accepts it (2xx), and a body it accepted is never sent again.

This module is the pow package's one import of ``Backoff`` (it lives with the node's hub client).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx

from gpupool.errors import InvalidInput, Unavailable
from gpupool.node.hub_client import Backoff

log = logging.getLogger("gpupool.pow")

MAX_URL_CHARS = 2048
GENERATED = "generated"
VALIDATED = "validated"

__all__ = ["GENERATED", "VALIDATED", "Backoff", "callback_base", "deliver", "post_once"]


def callback_base(value: object, *, field: str = "url") -> str:
    """An ``http(s)://host…`` base without its trailing slash; anything else is a 422."""
    text = value.strip() if isinstance(value, str) else ""
    parts = urlsplit(text)
    if not text or len(text) > MAX_URL_CHARS or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url must be an http(s) URL (the API node's callback base)", field=field)
    return text.rstrip("/")


async def post_once(http: httpx.AsyncClient, base: str, path: str, body: dict[str, Any]) -> None:
    """One POST of ``body`` to ``{base}/{path}``; Unavailable unless the API node answered 2xx."""
    try:
        resp = await http.post(f"{base}/{path}", json=body)
    except httpx.HTTPError as exc:
        raise Unavailable(
            f"callback {base}/{path} unreachable: {exc!r}", code="callback_unreachable"
        ) from exc
    if not 200 <= resp.status_code < 300:
        raise Unavailable(f"callback {base}/{path} answered {resp.status_code}", code="callback_refused")


async def deliver(
    http: httpx.AsyncClient,
    base: str,
    path: str,
    body: dict[str, Any],
    stop: asyncio.Event,
    backoff: Backoff,
) -> bool:
    """Post until accepted (True) or until ``stop`` is set (False); waits between tries by ``backoff``."""
    while not stop.is_set():
        try:
            await post_once(http, base, path, body)
        except Unavailable as exc:
            wait = backoff.next()
            log.warning("%s; retrying in %.1f s", exc.message, wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            continue
        backoff.reset()
        return True
    return False
