"""The node agent stays small: its start-up imports leave NumPy and FastAPI out (bench/agent.py's
60 MB aim rests on it). They load only when the node actually generates or validates PoC."""

from __future__ import annotations

import json
import subprocess
import sys

AGENT_MODULES = ["gpupool.node.agent", "gpupool.node.health", "gpupool.pow.api", "gpupool.pow.service"]


def test_agent_start_up_imports_neither_numpy_nor_fastapi() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for m in {AGENT_MODULES!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(k for k in ('numpy', 'fastapi', 'torch') if k in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []
