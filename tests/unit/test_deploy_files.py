"""The deployment files are documentation that must stay true, in both directions.

Every variable the Dockerfile, docker-compose.yml, the systemd units and ``.env.example`` name is one
something reads (a settings class, the CLI, the postgres image), and every variable the settings read
is in ``.env.example`` with its real default. A renamed setting fails here, not in someone's deploy.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML comes with uvicorn[standard]; no stubs
from pydantic_settings import BaseSettings

from gpupool.cli import credentials
from gpupool.config import DelegationSettings, HubSettings, NodeSettings
from gpupool.node.agent import EXIT_CONFIG

ROOT = Path(__file__).parent.parent.parent
SETTINGS: tuple[type[BaseSettings], ...] = (HubSettings, NodeSettings, DelegationSettings)
# Read outside the settings classes; each entry names the file that reads it and the text that does.
READ_BY_CLI = {
    "GPUPOOL_HUB_URL": ("src/gpupool/cli/user_cmds.py", 'envvar="GPUPOOL_HUB_URL"'),
    "GPUPOOL_CONFIG_DIR": ("src/gpupool/cli/credentials.py", "os.environ.get(CONFIG_DIR_ENV)"),
}
READ_BY_POSTGRES_IMAGE = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
READ_BY_GRAFANA_IMAGE = {"GF_AUTH_ANONYMOUS_ENABLED", "GF_AUTH_ANONYMOUS_ORG_ROLE"}
# Python's and pip's own, set in the Dockerfile for the build and the runtime.
READ_BY_PYTHON = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR"}

ENV_LINE = re.compile(r"^#?[ \t]*([A-Z][A-Z0-9_]+)=(\S*)(.*)$", re.MULTILINE)
ALSO = re.compile(r"\(also ([A-Z0-9_, ]+)\)")
INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*)")
NAME = re.compile(r"([A-Z][A-Z0-9_]+)=")


def env_names(settings: type[BaseSettings]) -> dict[str, list[str]]:
    """Field name -> its environment names, the canonical one first."""
    out = {}
    for field, info in settings.model_fields.items():
        choices = getattr(info.validation_alias, "choices", None)
        assert choices, f"{settings.__name__}.{field} has no environment name"
        out[field] = [str(c) for c in choices]
    return out


SETTINGS_READ = {env for s in SETTINGS for envs in env_names(s).values() for env in envs}
APP_READ = SETTINGS_READ | set(READ_BY_CLI)


def unknown(names: set[str], known: set[str] = APP_READ) -> list[str]:
    return sorted(names - known)


# ------------------------------------------------------------------ parsers (text in, names out)


def parse_env_example(text: str) -> dict[str, tuple[str, list[str]]]:
    """NAME -> (written default, the aliases its comment names as ``(also X, Y)``); duplicates fail."""
    out: dict[str, tuple[str, list[str]]] = {}
    for name, value, rest in ENV_LINE.findall(text):
        assert name not in out, f"{name} is listed twice"
        aliases = [a.strip() for m in ALSO.findall(rest) for a in m.split(",") if a.strip()]
        out[name] = (value, aliases)
    return out


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- NAME=value` form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def compose_names(text: str) -> dict[str, set[str]]:
    """Service -> the variables it sets; ``${…}`` interpolations anywhere count for every app service."""
    services = yaml.safe_load(text)["services"]
    found = {name: set(compose_env(svc)) for name, svc in services.items()}
    found["${interpolations}"] = set(INTERPOLATION.findall(text))
    return found


def systemd_env(text: str) -> dict[str, str]:
    pairs = re.findall(r"^Environment=([A-Z][A-Z0-9_]+)=(\S*)$", text, re.MULTILINE)
    return dict(pairs)


def systemd_options(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in re.findall(r"^([A-Za-z]+)=(.*)$", text, re.MULTILINE):
        out.setdefault(key, []).append(value.strip())
    return out


def dockerfile_env(text: str) -> dict[str, str]:
    joined = text.replace("\\\n", " ")
    lines = [line.removeprefix("ENV ") for line in joined.splitlines() if line.startswith("ENV ")]
    return dict(re.findall(r"([A-Z][A-Z0-9_]+)=(\S+)", " ".join(lines)))


def read(*parts: str) -> str:
    return (ROOT / Path(*parts)).read_text()


def compose() -> dict[str, Any]:
    return yaml.safe_load(read("docker-compose.yml"))["services"]  # type: ignore[no-any-return]


UNITS = {"hub": "gpupool-hub.service", "node": "gpupool-node.service"}


# ------------------------------------------------------------------ every name is read


def test_compose_names_only_what_its_services_read() -> None:
    found = compose_names(read("docker-compose.yml"))
    assert found["hub"] and found["node"], "no environment parsed from docker-compose.yml"
    assert not unknown(found.pop("postgres"), READ_BY_POSTGRES_IMAGE)
    assert not unknown(found.pop("grafana"), READ_BY_GRAFANA_IMAGE)
    for service, names in found.items():
        assert not unknown(names), f"docker-compose.yml {service} sets variables nothing reads"


@pytest.mark.parametrize("unit", UNITS.values())
def test_systemd_units_name_only_read_variables(unit: str) -> None:
    names = set(systemd_env(read("deploy", "systemd", unit)))
    assert names, f"no Environment= parsed from {unit}"
    assert not unknown(names), f"{unit} sets variables nothing reads"


def test_dockerfile_names_only_read_variables() -> None:
    names = set(dockerfile_env(read("Dockerfile")))
    assert names & SETTINGS_READ, "no settings variable parsed from the Dockerfile"
    assert not unknown(names, APP_READ | READ_BY_PYTHON)


def test_env_example_names_only_read_variables_and_real_aliases() -> None:
    documented = parse_env_example(read(".env.example"))
    assert not unknown(set(documented))
    aliases_of = {envs[0]: envs[1:] for s in SETTINGS for envs in env_names(s).values()}
    for name, (_, aliases) in documented.items():
        for alias in aliases:
            assert alias in aliases_of.get(name, []), f".env.example: {alias} is not an alias of {name}"


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (lambda t: set(parse_env_example(t)), "# GPUPOOL_HUB_PROT=8203   # typo\n"),
        (
            lambda t: set().union(*compose_names(t).values()),
            "services:\n  hub:\n    environment:\n      - GPUPOOL_HUB_PROT=8203\n",
        ),
        (
            lambda t: set().union(*compose_names(t).values()),
            "services: {node: {image: x}}\n# ${GPUPOOL_HUB_PROT:-1}\n",
        ),
        (lambda t: set(systemd_env(t)), "[Service]\nEnvironment=GPUPOOL_HUB_PROT=8203\n"),
        (lambda t: set(dockerfile_env(t)), "FROM x\nENV DATA_DIR=/d \\\n    GPUPOOL_HUB_PROT=8203\n"),
    ],
)
def test_a_misspelt_variable_is_caught_in_every_format(parse: Any, text: str) -> None:
    assert unknown(parse(text)) == ["GPUPOOL_HUB_PROT"]


def test_names_read_elsewhere_are_still_read_there() -> None:
    assert credentials.CONFIG_DIR_ENV == "GPUPOOL_CONFIG_DIR"
    for name, (path, needle) in READ_BY_CLI.items():
        assert needle in read(path), f"{name} is no longer read in {path}: drop it from the deploy files"


# ------------------------------------------------------------------ every setting is documented


def written_matches(value: object, written: str) -> bool:
    """Does the default written in .env.example equal the settings' default ``value``?"""
    if value is None:
        return written == ""
    if isinstance(value, bool):
        return written == str(value).lower()
    if isinstance(value, int | float):
        return re.fullmatch(r"-?[0-9.]+", written) is not None and float(written) == float(value)
    if isinstance(value, Path):
        return Path(written) == value
    if isinstance(value, list):
        return written == ",".join(value)
    return written == str(value)


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: s.__name__)
def test_every_setting_is_in_env_example_with_its_default(settings: type[BaseSettings]) -> None:
    documented = parse_env_example(read(".env.example"))
    defaults = settings.model_construct()
    for field, envs in env_names(settings).items():
        assert envs[0] in documented, f"{envs[0]} ({settings.__name__}.{field}) is missing from .env.example"
        value, written = getattr(defaults, field), documented[envs[0]][0]
        assert written_matches(value, written), f".env.example {envs[0]}={written}, default is {value!r}"


@pytest.mark.parametrize(
    ("value", "written", "ok"),
    [
        (None, "", True),
        (None, "x", False),
        (True, "true", True),
        (True, "True", False),
        (8203, "8203", True),
        (8203, "8204", False),
        (30.0, "30", True),
        ("50/second", "50/second", True),
        ("50/second", "5", False),
        (Path("./data/artifacts"), "./data/artifacts", True),
        (Path("./data"), "./dat", False),
        (["inference"], "inference", True),
        (["a", "b"], "a", False),
    ],
)
def test_default_comparison(value: object, written: str, ok: bool) -> None:
    assert written_matches(value, written) is ok


# ------------------------------------------------------------------ the files are wired right


def path_settings() -> set[str]:
    """Canonical names of the settings that are writable directories (default is a Path)."""
    return {
        envs[0]
        for s in SETTINGS
        for field, envs in env_names(s).items()
        if isinstance(getattr(s.model_construct(), field), Path)
    }


def under(path: str, roots: list[str]) -> bool:
    return any(PurePosixPath(path).is_relative_to(root) for root in roots)


def test_compose_wires_the_node_to_the_hub_and_the_hub_to_postgres() -> None:
    services = compose()
    hub, node = compose_env(services["hub"]), compose_env(services["node"])
    pg = compose_env(services["postgres"])
    assert services["hub"]["command"] == ["hub"] and services["node"]["command"] == ["node"]
    assert services["hub"]["build"] == services["node"]["build"], "one image for both"
    assert node["REGISTRY_URL"] == f"http://hub:{hub['GPUPOOL_HUB_PORT']}", "the node must reach the hub"
    assert f"{hub['GPUPOOL_HUB_PORT']}:{hub['GPUPOOL_HUB_PORT']}" in services["hub"]["ports"]
    expected_db = (
        f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}"
    )
    assert hub["GPUPOOL_DB_URL"] == expected_db, "the hub must use the postgres service's database"
    assert hub["GPUPOOL_REDIS_URL"].startswith("redis://redis:")
    assert services["node"]["depends_on"]["hub"]["condition"] == "service_healthy"
    for name, svc in (("hub", hub), ("node", node)):
        mounts = [v.split(":")[1] for v in services[name]["volumes"]]
        for env in path_settings() & set(svc):
            assert under(svc[env], mounts), f"{name} {env}={svc[env]} is not on a volume: lost on restart"


@pytest.mark.parametrize(("command", "unit"), UNITS.items())
def test_systemd_units_restart_stop_and_write_where_they_should(command: str, unit: str) -> None:
    text = read("deploy", "systemd", unit)
    opts = systemd_options(text)
    assert opts["ExecStart"] == [f"/opt/gpupool/.venv/bin/gpupool {command}"]
    assert opts["EnvironmentFile"] == [f"/etc/gpupool/{command}.env"]
    assert opts["Restart"] == ["on-failure"] and opts["KillSignal"] == ["SIGTERM"]
    assert opts["NoNewPrivileges"] == ["yes"] and opts["ProtectSystem"] == ["strict"]
    writable = [p for line in opts["ReadWritePaths"] for p in line.split()]
    for env, value in systemd_env(text).items():
        if env in path_settings():
            assert under(value, writable), f"{unit}: {env}={value} is read-only under ProtectSystem=strict"


def test_node_unit_gives_up_on_config_errors_and_keeps_the_gpus() -> None:
    opts = systemd_options(read("deploy", "systemd", UNITS["node"]))
    assert opts["RestartPreventExitStatus"] == [str(EXIT_CONFIG)]
    assert opts.get("PrivateDevices", ["no"]) == ["no"], "PrivateDevices hides /dev/nvidia* from tasks"


def test_dockerfile_runs_gpupool_as_a_user_without_torch() -> None:
    text = read("Dockerfile")
    lines = [line.strip() for line in text.replace("\\\n", " ").splitlines()]
    assert 'ENTRYPOINT ["gpupool"]' in lines and 'CMD ["hub"]' in lines
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    installs = " ".join(line for line in lines if line.startswith("RUN ") and "pip install" in line)
    assert "pip install ." in installs and "torch" not in installs and "[gpu]" not in installs
    for env, value in dockerfile_env(text).items():
        if env in path_settings():
            assert under(value, ["/data"]), f"{env}={value} is outside /data, the directory the user owns"
