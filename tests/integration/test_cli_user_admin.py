"""``gpupool admin disable-user | enable-user | revoke-sessions | delete-user`` against a real hub process."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from gpupool.cli.app import app
from gpupool.client import Client, ClientError
from tests.conftest import ADMIN_PASSWORD
from tests.procs import HubProcess, running_hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    with running_hub(tmp_path_factory.mktemp("cli-admin-hub")) as proc:
        yield proc


@pytest.fixture
def admin_cli(hub: HubProcess, tmp_path: Path) -> Iterator[CliRunner]:
    """A CLI logged in as admin, with a config dir of its own."""
    runner = CliRunner(env={"GPUPOOL_CONFIG_DIR": str(tmp_path / "config"), "GPUPOOL_HUB_URL": None})
    result = runner.invoke(
        app,
        ["login", "--hub", hub.url, "--username", "admin", "--password-stdin"],
        input=ADMIN_PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    yield runner


NewUser = Callable[..., tuple[str, str, Client]]


@pytest.fixture
def new_user(hub: HubProcess) -> Iterator[NewUser]:
    """Create a user through the admin SDK; returns (name, password, an SDK client logged in as them)."""
    clients: list[Client] = []

    def make(micro: int = 0) -> tuple[str, str, Client]:
        username, password = f"u{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}"
        with Client(hub.url) as admin:
            admin.login("admin", ADMIN_PASSWORD)
            admin.create_user(username, password)
            if micro:
                admin.mint(username, micro)
        user = Client(hub.url)
        clients.append(user)
        user.login(username, password)
        return username, password, user

    yield make
    for client in clients:
        client.close()


def run(runner: CliRunner, *args: str, input: str | None = None) -> Result:
    return runner.invoke(app, ["admin", *args], input=input)


def refused_code(client: Client) -> str:
    with pytest.raises(ClientError) as caught:
        client.balance()
    assert caught.value.status == 401
    return caught.value.code


def test_disable_then_enable_a_user(hub: HubProcess, admin_cli: CliRunner, new_user: NewUser) -> None:
    username, password, user = new_user()
    result = run(admin_cli, "disable-user", username)
    assert result.exit_code == 0, result.output
    assert f"Disabled user {username}" in result.stdout
    assert refused_code(user) == "token_revoked"
    with Client(hub.url) as stranger, pytest.raises(ClientError):
        stranger.login(username, password)
    assert run(admin_cli, "enable-user", username).exit_code == 0
    with Client(hub.url) as again:
        again.login(username, password)
        assert again.balance().available_micro == 0
    assert refused_code(user) == "token_revoked"  # tokens from before the disable stay dead


def test_revoke_sessions_ends_the_users_tokens(
    hub: HubProcess, admin_cli: CliRunner, new_user: NewUser
) -> None:
    username, _password, user = new_user()
    result = run(admin_cli, "revoke-sessions", username)
    assert result.exit_code == 0, result.output
    assert refused_code(user) == "token_revoked"
    with pytest.raises(ClientError):
        user.refresh()


def test_delete_user_asks_first_and_refuses_a_funded_account(
    hub: HubProcess, admin_cli: CliRunner, new_user: NewUser
) -> None:
    username, _password, user = new_user(micro=5)
    declined = run(admin_cli, "delete-user", username, input="n\n")
    assert declined.exit_code == 2
    funded = run(admin_cli, "delete-user", username, "--yes")
    assert funded.exit_code == 1
    assert "account_not_empty" in funded.stderr
    user.transfer("admin", 5)
    deleted = run(admin_cli, "delete-user", username, "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert refused_code(user) == "token_revoked"
    missing = run(admin_cli, "disable-user", username)
    assert missing.exit_code == 1
    assert "user_not_found" in missing.stderr


def test_a_user_cannot_manage_users(hub: HubProcess, tmp_path: Path, new_user: NewUser) -> None:
    username, password, _user = new_user()
    runner = CliRunner(env={"GPUPOOL_CONFIG_DIR": str(tmp_path / "u"), "GPUPOOL_HUB_URL": None})
    login = runner.invoke(
        app, ["login", "--hub", hub.url, "--username", username, "--password-stdin"], input=password + "\n"
    )
    assert login.exit_code == 0, login.output
    result = run(runner, "disable-user", "admin")
    assert result.exit_code == 1
    assert "forbidden" in result.stderr
