"""The deployment files are documentation that must stay true: every variable they name is read.

And every variable the settings read is listed in ``.env.example`` with its real default.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from gpupool.config import HubSettings, NodeSettings

ROOT = Path(__file__).parent.parent.parent
# Read outside the settings classes, each named with where: the CLI (cli/user_cmds.py, cli/credentials.py,
# cli/node_cmds.py) and the images the compose file runs.
READ_ELSEWHERE = {
    "GPUPOOL_HUB_URL",
    "GPUPOOL_CONFIG_DIR",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
}
ENV_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]+)=(\S*)", re.MULTILINE)


def names(settings: type[BaseSettings]) -> dict[str, list[str]]:
    """Field name -> its environment names, canonical first."""
    out = {}
    for name, info in settings.model_fields.items():
        alias = info.validation_alias
        choices = getattr(alias, "choices", None)
        assert choices, f"{settings.__name__}.{name} has no environment name"
        out[name] = [str(c) for c in choices]
    return out


ALL_READ = {
    env for s in (HubSettings, NodeSettings) for envs in names(s).values() for env in envs
} | READ_ELSEWHERE


def env_example() -> dict[str, str]:
    return dict(ENV_LINE.findall((ROOT / ".env.example").read_text()))


def compose_variables() -> set[str]:
    text = (ROOT / "docker-compose.yml").read_text()
    keys = set(re.findall(r"^\s+([A-Z][A-Z0-9_]+):", text, re.MULTILINE))
    return keys | set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", text))


def systemd_variables() -> set[str]:
    found: set[str] = set()
    for unit in (ROOT / "deploy" / "systemd").glob("*.service"):
        found |= set(re.findall(r"^Environment=([A-Z][A-Z0-9_]+)=", unit.read_text(), re.MULTILINE))
    return found


def dockerfile_variables() -> set[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found: set[str] = set()
    for line in text.splitlines():
        if line.startswith("ENV "):
            found |= set(re.findall(r"([A-Z][A-Z0-9_]+)=", line))
    return found - {
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "PIP_NO_CACHE_DIR",
    }  # Python's and pip's own


@pytest.mark.parametrize(
    ("where", "found"),
    [
        ("docker-compose.yml", compose_variables),
        ("systemd units", systemd_variables),
        ("Dockerfile", dockerfile_variables),
        (".env.example", lambda: set(env_example())),
    ],
)
def test_every_variable_the_files_name_is_read(where: str, found: object) -> None:
    variables = found()  # type: ignore[operator]
    assert variables, f"no variables found in {where}"
    unknown = sorted(v for v in variables if v not in ALL_READ)
    assert not unknown, f"{where} names variables nothing reads: {unknown}"


def test_every_setting_is_documented_with_its_default() -> None:
    documented = env_example()
    for settings in (HubSettings, NodeSettings):
        defaults = settings.model_construct()
        for field, envs in names(settings).items():
            assert envs[0] in documented, (
                f"{envs[0]} ({settings.__name__}.{field}) is missing from .env.example"
            )
            value = getattr(defaults, field)
            written = documented[envs[0]]
            if isinstance(value, bool):
                assert written == str(value).lower(), envs[0]
            elif isinstance(value, int | float | str) and value is not None and written:
                assert written == str(value) or float(written) == float(value), (
                    f"{envs[0]}: {written} != {value}"
                )
            elif isinstance(value, list) and written:
                assert written == ",".join(value), envs[0]


def test_systemd_units_run_the_right_commands() -> None:
    hub = (ROOT / "deploy" / "systemd" / "gpupool-hub.service").read_text()
    node = (ROOT / "deploy" / "systemd" / "gpupool-node.service").read_text()
    assert "ExecStart=/opt/gpupool/.venv/bin/gpupool hub" in hub and "KillSignal=SIGTERM" in hub
    assert "ExecStart=/opt/gpupool/.venv/bin/gpupool node" in node and "RestartPreventExitStatus=2" in node
