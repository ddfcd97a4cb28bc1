"""``gpupool node``: every setting is also a flag, and flags win over the environment."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from gpupool.cli.app import app
from gpupool.config import NodeSettings

FIXTURES = Path(__file__).parent.parent / "fixtures" / "gpu"
FLAG_OF = {"price_token_per_ksec": "--price"}


def test_every_node_setting_has_a_flag() -> None:
    help_text = CliRunner().invoke(app, ["node", "--help"], env={"COLUMNS": "200"}).output
    for field in NodeSettings.model_fields:
        flag = FLAG_OF.get(field, "--" + field.replace("_", "-"))
        assert flag in help_text, f"NodeSettings.{field} has no {flag} flag"


def test_flag_overrides_the_environment() -> None:
    env = {"GPUPOOL_NODE_FAKE_NVML": str(FIXTURES / "does-not-exist"), "COLUMNS": "200"}
    result = CliRunner().invoke(
        app, ["node", "--print-inventory", "--fake-nvml", str(FIXTURES / "h100-idle")], env=env
    )
    assert result.exit_code == 0, result.output
    assert "GPU node (nvml)" in result.output and "H100" in result.output


def test_bad_flag_value_is_a_configuration_error() -> None:
    result = CliRunner().invoke(app, ["node", "--max-parallel", "0"])
    assert result.exit_code == 2
