"""The client's address behind trusted reverse proxies, and only behind them.

Login budgets and rate limits count per client address. ``X-Forwarded-For`` and ``Forwarded`` are
written by whoever sends the request, so they are read only when the direct peer is one of the
configured proxies (``GPUPOOL_HUB_TRUSTED_PROXIES``), and then from the right: the client is the
nearest address that is not itself a trusted proxy. uvicorn's own header handling is off (it trusts
127.0.0.1 by default, so any local client could pick its address).
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.types import ASGIApp, Receive, Scope, Send

Network = IPv4Network | IPv6Network
_MAX_HOPS = 32  # addresses read from the headers at most; the rest of a long chain is ignored


def _parse(value: str) -> IPv4Address | IPv6Address | None:
    """``1.2.3.4``, ``1.2.3.4:80``, ``"[2001:db8::1]:443"`` → the address; anything else → None."""
    text = value.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ip_address(text)
    except ValueError:
        return None


def _forwarded_for(headers: Sequence[tuple[bytes, bytes]]) -> list[str]:
    """The hops of ``Forwarded`` (RFC 7239) if present, else of ``X-Forwarded-For``, client first."""
    forwarded = [v.decode("latin-1") for k, v in headers if k == b"forwarded"]
    if forwarded:
        hops = []
        for element in ",".join(forwarded).split(","):
            for pair in element.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.lower() == "for":
                    hops.append(value)
        return hops
    xff = [v.decode("latin-1") for k, v in headers if k == b"x-forwarded-for"]
    return [hop for hop in ",".join(xff).split(",") if hop.strip()]


def client_behind(peer: str, headers: Sequence[tuple[bytes, bytes]], trusted: Sequence[Network]) -> str:
    """The address to count a request against: ``peer`` unless it is a trusted proxy."""

    def is_trusted(address: IPv4Address | IPv6Address | None) -> bool:
        return address is not None and any(address in net for net in trusted)

    client = peer
    if not is_trusted(_parse(peer)):
        return client
    for hop in reversed(_forwarded_for(headers)[-_MAX_HOPS:]):
        address = _parse(hop)
        if address is None:
            break  # "unknown" or garbage: the last trusted hop is all we know
        client = str(address)
        if not is_trusted(address):
            break
    return client


class TrustedProxyMiddleware:
    """Rewrites ``scope["client"]`` from forwarded headers sent by a trusted proxy (HTTP and WebSocket)."""

    def __init__(self, app: ASGIApp, trusted: Sequence[Network]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.trusted and scope["type"] in ("http", "websocket") and scope.get("client"):
            host, port = scope["client"]
            client = client_behind(host, scope.get("headers", []), self.trusted)
            if client != host:
                scope = {**scope, "client": (client, port)}
        await self.app(scope, receive, send)
