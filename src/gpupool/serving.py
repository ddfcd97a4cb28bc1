"""Serve an ASGI app so that SIGTERM and SIGINT mean a clean stop with exit code 0 (SPEC §8).

uvicorn drains connections and runs the lifespan shutdown on those signals, then re-raises the signal
so that the process dies *by* it (exit -15). A supervisor (systemd, docker, our own tests) reads that
as a crash; we have already shut down cleanly, so the re-raise is dropped.
"""

from __future__ import annotations

from types import FrameType
from typing import Any

import uvicorn


class CleanExitServer(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def serve(app: Any, host: str, port: int, log_level: str = "info", **config: Any) -> None:
    """Run ``app`` until SIGTERM or SIGINT; return normally after a graceful shutdown."""
    server = CleanExitServer(uvicorn.Config(app, host=host, port=port, log_level=log_level.lower(), **config))
    server.run()
