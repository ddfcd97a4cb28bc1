"""A small real HTTP server playing Gonka's API node: it takes ``POST {base}/generated`` and ``/validated``.

Gonka's decentralized-api gives its ML node ``url = http://api:9100/v1/poc-batches`` and receives the
ML node's ``ProofBatch``es and ``ValidatedBatch``es there. This one records every body it accepted, per
path and in arrival order, and can refuse the first ``fail_first`` posts with 503 to make the node retry.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BASE_PATH = "/v1/poc-batches"


class CallbackServer:
    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.accepted: dict[str, list[dict[str, Any]]] = {"generated": [], "validated": []}
        self.refused = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{BASE_PATH}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
                kind = self.path.removeprefix(BASE_PATH + "/")
                with server._lock:
                    if kind not in server.accepted:
                        code = 404
                    elif server.refused < server.fail_first:
                        server.refused += 1
                        code = 503
                    else:
                        server.accepted[kind].append(body)
                        code = 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        return Handler

    def bodies(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.accepted[kind])

    def wait_for(self, kind: str, count: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.bodies(kind)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(
            f"{count} {kind} bodies did not arrive within {timeout_s}s: {len(self.bodies(kind))}"
        )

    async def arrived(self, kind: str, count: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """``wait_for`` for a test whose event loop also runs the node (it must not block)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.bodies(kind)
            if len(got) >= count:
                return got
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"{count} {kind} bodies did not arrive within {timeout_s}s: {len(self.bodies(kind))}"
        )


def gonka_key_forms(secret: bytes | None = None) -> dict[str, str]:
    """One secp256k1 key in each form Gonka's participants send: 66-hex compressed, its base64, x-only."""
    import base64

    from coincurve import PrivateKey

    from gpupool import crypto

    pair = crypto.KeyPair(secret) if secret else crypto.KeyPair.generate()
    compressed = PrivateKey(pair.secret).public_key.format(compressed=True)
    return {
        "hex66": compressed.hex(),
        "base64": base64.b64encode(compressed).decode(),
        "xonly": pair.pubkey,
    }


@contextmanager
def running_callback(fail_first: int = 0) -> Iterator[CallbackServer]:
    server = CallbackServer(fail_first)
    server._thread.start()
    try:
        yield server
    finally:
        server._httpd.shutdown()
        server._httpd.server_close()
        server._thread.join(5)
