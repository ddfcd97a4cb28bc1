"""The README's "First hour", run as it stands: every command, in order, on a fresh data directory.

The commands and what they print are read from the README's ``console`` block, so a README that
drifts from the CLI breaks this test. The hub and its local node come from ``gpupool up`` on free
ports with NVML out of reach, as on a machine without a GPU. ``…`` in the README stands for what
differs from run to run (ids, paths, digests); a line of its own, for any lines.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ADMIN_PASSWORD = "walkthrough-admin-pw"
PROMPTS = re.compile(r"^(Password( for \w+)?|Repeat for confirmation):\s*$")
ASSIGN = re.compile(r"^(\w+)=\$\((.*)\)$")


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)


def walkthrough(text: str) -> list[Step]:
    """The ``$ command`` lines of the First hour's console block, each with the lines it prints."""
    section = text.split("## First hour", 1)[1]
    block = section.split("```console\n", 1)[1].split("```", 1)[0]
    steps: list[Step] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append(Step(line[2:]))
        elif line.strip() and not PROMPTS.match(line):
            steps[-1].expected.append(line)
    return steps


def pattern(expected: list[str]) -> re.Pattern[str]:
    """The expected lines as one regex: whitespace runs are equal, ``…`` is anything on its line."""
    parts = []
    for line in expected:
        if line.strip() == "…":
            parts.append(r"(?s:.*)")
        else:
            words = [re.escape(w).replace("…", r"[^\n]*") for w in line.split()]
            parts.append(r"[ \t]*" + r"[ \t]+".join(words) + r"[ \t]*")
    return re.compile(r"\n".join(parts))


def printed(stdout: str) -> str:
    """What a reader compares: the prompts (written without a newline) and blank lines left out."""
    text = re.sub(r"(Password( for \w+)?|Repeat for confirmation):[ \t]*", "", stdout)
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())


def stdin_for(command: str) -> str:
    """The passwords the command's prompts ask for: admin's, or ``pw-NAME-walk`` for a user NAME."""
    if m := re.search(r"create-user (\w+)", command):
        return f"pw-{m[1]}-walk\npw-{m[1]}-walk\n"
    if m := re.search(r"login .*--username (\w+)", command):
        return f"{ADMIN_PASSWORD}\n" if m[1] == "admin" else f"pw-{m[1]}-walk\n"
    return ""


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """``gpupool up`` in a fresh folder: a hub and one CPU node, killed with their process group."""
    port, node_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUPOOL_", "REGISTRY_", "OWNER_"))}
    env |= {
        "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT / "src")),
        "GPUPOOL_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "GPUPOOL_CONFIG_DIR": str(tmp_path / "config"),
        "GPUPOOL_NODE_FAKE_NVML": str(_no_gpu(tmp_path / "no-gpu")),  # a CPU node, whatever the host has
        "COLUMNS": "80",
    }
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    log = (tmp_path / "up.log").open("wb")
    argv = ["up", "--port", str(port), "--grpc-port", "0", "--node-port", str(node_port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpupool", *argv],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for_node(port, proc, tmp_path / "up.log")
        yield port, env
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        log.close()


def _no_gpu(folder: Path) -> Path:
    """An NVML replay of a machine with a driver and no GPU: the local node is a CPU node."""
    recorded = json.loads((ROOT / "tests" / "fixtures" / "gpu" / "h100-idle" / "nvml.json").read_text())
    folder.mkdir()
    (folder / "nvml.json").write_text(json.dumps(recorded | {"device_count": 0, "devices": []}))
    return folder


def _wait_for_node(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).json()["online_miners"] == 1:
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise TimeoutError(log.read_text()[-3000:])


def test_the_readme_block_is_found_and_names_every_step() -> None:
    steps = walkthrough(README.read_text())
    commands = " ".join(s.command for s in steps)
    for needed in ("create-user bob", "transfer bob", "task submit", "task show", "task stop", "result"):
        assert needed in commands
    assert steps[0].command.startswith("./gpupool login --hub http://127.0.0.1:8203")
    assert pattern(["a … c"]).fullmatch("a b b c") and not pattern(["a … c"]).fullmatch("a b\nc")


@pytest.mark.timeout(400)  # some twenty CLI processes, each a Python start; about 60 s alone
def test_every_command_of_the_first_hour_prints_what_the_readme_says(
    pool: tuple[int, dict[str, str]], tmp_path: Path
) -> None:
    port, env = pool
    cli = f"{shlex.quote(sys.executable)} -m gpupool"
    variables: dict[str, str] = {}
    for step in walkthrough(README.read_text()):
        command = step.command.replace("./gpupool", cli).replace("127.0.0.1:8203", f"127.0.0.1:{port}")
        assigned = ASSIGN.match(command)
        out = subprocess.run(
            ["bash", "-c", assigned[2] if assigned else command],
            cwd=tmp_path,
            env=env | variables,
            input=stdin_for(command),
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,  # no terminal: the password prompts read stdin
        )
        assert out.returncode == 0, (step.command, out.stdout, out.stderr)
        if assigned:
            variables[assigned[1]] = out.stdout.strip()
            assert re.fullmatch(r"[0-9a-f]{32}", variables[assigned[1]]), (step.command, out.stdout)
            continue
        got = printed(out.stdout).replace(f"127.0.0.1:{port}", "127.0.0.1:8203")
        if os.environ.get("GPUPOOL_WALKTHROUGH_DUMP"):
            print(f"$ {step.command}\n{got}")
            continue
        assert pattern(step.expected).fullmatch(got), (step.command, got)
    assert (tmp_path / "results" / "words.txt").read_text().split()  # the artifact came down
