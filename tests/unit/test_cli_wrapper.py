"""``./gpupool``: the checkout's CLI without activating anything, and what ``gpupool up`` tells to type."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gpupool.cli.up_cmd import cli_command, how_to_use

ROOT = Path(__file__).resolve().parents[2]


def test_the_wrapper_runs_the_venvs_gpupool_with_every_argument(tmp_path: Path) -> None:
    shutil.copy(ROOT / "gpupool", tmp_path / "gpupool")
    missing = subprocess.run([str(tmp_path / "gpupool"), "balance"], capture_output=True, text=True)
    assert missing.returncode == 127 and "make run" in missing.stderr  # says what to do first
    fake = tmp_path / ".venv" / "bin" / "gpupool"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "[$a]"; done\n')
    fake.chmod(0o755)
    done = subprocess.run(
        [str(tmp_path / "gpupool"), "task", "submit", "--", "echo", "a b"], capture_output=True, text=True
    )
    assert done.stdout.split("\n")[:5] == ["[task]", "[submit]", "[--]", "[echo]", "[a b]"]


def test_up_names_the_wrapper_in_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli_command() != "./gpupool"  # no wrapper here: the interpreter's own script
    shutil.copy(ROOT / "gpupool", tmp_path / "gpupool")
    os.chmod(tmp_path / "gpupool", 0o755)
    assert cli_command() == "./gpupool"
    lines = how_to_use("./gpupool", "http://127.0.0.1:8203")
    assert "./gpupool login --hub http://127.0.0.1:8203 --username admin" in lines[1]
    assert "source " in lines[0] and "/activate" in lines[0]
