"""``gpupool hub --grpc-port 0`` tells the port it really bound, not ``:0``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import grpc

from tests.conftest import ADMIN_PASSWORD, free_port


def test_a_free_grpc_port_is_printed_once_bound(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "GPUPOOL_DB_URL": f"sqlite:///{tmp_path}/hub.db",
        "GPUPOOL_HUB_DATA_DIR": str(tmp_path / "hub-data"),
        "GPUPOOL_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "GPUPOOL_HUB_LOG_LEVEL": "warning",
    }
    argv = [sys.executable, "-m", "gpupool", "hub", "--port", str(port), "--grpc-port", "0"]
    proc = subprocess.Popen(
        argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"gpupool hub on http://127.0.0.1:{port}" in first and ":0" not in first, first
        deadline, line = time.monotonic() + 60, ""
        while time.monotonic() < deadline and not line.startswith("gRPC on"):
            line = proc.stdout.readline()
        bound = re.fullmatch(r"gRPC on 127\.0\.0\.1:(\d+)\n", line)
        assert bound and int(bound[1]) > 0, line
        with grpc.insecure_channel(f"127.0.0.1:{bound[1]}") as channel:  # it really answers there
            grpc.channel_ready_future(channel).result(timeout=10)
    finally:
        proc.terminate()
        proc.wait(20)
