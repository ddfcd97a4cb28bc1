"""Serve an ASGI app so that SIGTERM and SIGINT mean a clean stop with exit code 0 (SPEC §8).

uvicorn drains connections and runs the lifespan shutdown on those signals, then re-raises the signal
so that the process dies *by* it (exit -15). A supervisor (systemd, docker, our own tests) reads that
as a crash; we have already shut down cleanly, so the re-raise is dropped.
"""

from __future__ import annotations

import gc
import logging
import re
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from gpupool.bounds import MAX_WS_FRAME_BYTES

_SECRET_QUERY = re.compile(r"((?:session_token|auth_token|token)=)[^&\s\"']+")


class RedactSecrets(logging.Filter):
    """Masks tokens carried in query strings (the heartbeat socket's ``session_token``) in log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(_SECRET_QUERY.sub(r"\1***", a) if isinstance(a, str) else a for a in args)
        if isinstance(record.msg, str):
            record.msg = _SECRET_QUERY.sub(r"\1***", record.msg)
        return True


def redact_server_logs() -> None:
    for name in ("uvicorn.access", "uvicorn.error", "httpx"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


class CleanExitServer(uvicorn.Server):
    """A stop signal stops the server cleanly; ``before_stop`` (if any) runs first, off the loop.

    ``gpupool up`` uses it to stop its node before its hub: the node's tasks report to a hub that still
    answers. The server keeps serving meanwhile; a second signal stops it without waiting.
    """

    def __init__(self, config: uvicorn.Config, before_stop: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self._before_stop = before_stop
        self._stopping: threading.Thread | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._before_stop is not None and self._stopping is None:
            self._stopping = threading.Thread(target=self._stop_after, name="before-stop", daemon=True)
            self._stopping.start()
            return
        super().handle_exit(sig, frame)
        self._captured_signals.clear()

    def _stop_after(self) -> None:
        try:
            assert self._before_stop is not None
            self._before_stop()
        finally:
            self.should_exit = True


GC_THRESHOLDS = (10_000, 20, 20)


def tune_gc_for_serving() -> None:
    """Keep the cycle collector off what lives as long as the process, and run it less often.

    By the time an app is built, some 150,000 objects (modules, routes, schemas) exist that will
    never be garbage; with CPython's defaults every full collection walks all of them, and the
    collector ran 490 times in 5,000 tasks, taking 1.06 s of the hub's 5 s (bench/RESULTS.md).
    Frozen, and with a young generation of 10,000 allocations, it took 0.06 s.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve(
    app: Any,
    host: str,
    port: int,
    log_level: str = "info",
    before_stop: Callable[[], None] | None = None,
    **config: Any,
) -> None:
    """Run ``app`` until SIGTERM or SIGINT; return normally after a graceful shutdown."""
    # Heartbeat sockets carry small JSON messages: per-message deflate would cost CPU on both ends
    # for a few bytes saved.
    config.setdefault("ws_per_message_deflate", False)
    config.setdefault("ws_max_size", MAX_WS_FRAME_BYTES)
    # uvicorn would take X-Forwarded-For from any 127.0.0.1 peer; the hub reads it from the proxies
    # it is told to trust only (api/proxies.py).
    config.setdefault("proxy_headers", False)
    server = CleanExitServer(
        uvicorn.Config(app, host=host, port=port, log_level=log_level.lower(), **config), before_stop
    )
    redact_server_logs()
    tune_gc_for_serving()
    server.run()
