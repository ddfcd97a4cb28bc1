"""The ``gpupool`` user and admin commands against a real hub process (one per module, SQLite)."""

from __future__ import annotations

import json
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest
from typer.testing import CliRunner, Result

from gpupool.cli import credentials
from gpupool.cli.app import app
from gpupool.client import Client
from tests.conftest import ADMIN_PASSWORD, free_port
from tests.procs import HubProcess, running_hub

JWT_SECRET = "cli-test-jwt-secret-0123456789abcdef012345"
Run = Callable[..., Result]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    with running_hub(tmp_path_factory.mktemp("cli-hub"), GPUPOOL_HUB_JWT_SECRET=JWT_SECRET) as proc:
        yield proc


@pytest.fixture(scope="module")
def admin(hub: HubProcess) -> Iterator[Client]:
    with Client(hub.url) as client:
        client.login("admin", ADMIN_PASSWORD)
        yield client


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private config dir for the CLI and for this process (so nothing touches the real one)."""
    path = tmp_path / "config"
    monkeypatch.setenv("GPUPOOL_CONFIG_DIR", str(path))
    return path


@pytest.fixture
def run(config_dir: Path) -> Run:
    """Invoke the CLI with its own config dir and no hub URL from the environment."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, hub_url: str | None = None) -> Result:
        env = {"GPUPOOL_CONFIG_DIR": str(config_dir), "GPUPOOL_HUB_URL": hub_url}
        return runner.invoke(app, list(args), input=input, env=env)

    return invoke


@pytest.fixture
def make_user(admin: Client) -> Callable[..., tuple[str, str]]:
    """Create a user through the SDK, funded with ``micro`` micro-units; returns (username, password)."""

    def make(micro: int = 0, role: str = "user") -> tuple[str, str]:
        username, password = f"u{uuid.uuid4().hex[:10]}", f"pw-{uuid.uuid4().hex}"
        admin.create_user(username, password, role)
        if micro:
            admin.mint(username, micro)
        return username, password

    return make


def login(run: Run, hub: HubProcess, username: str, password: str) -> Result:
    result = run("login", "--hub", hub.url, "--username", username, "--password-stdin", input=password + "\n")
    assert result.exit_code == 0, result.output
    return result


def saved(config_dir: Path) -> dict[str, str]:
    data: dict[str, str] = json.loads((config_dir / "credentials.json").read_text())
    return data


def test_login_prompts_for_password_and_saves_a_private_session(
    run: Run, hub: HubProcess, config_dir: Path
) -> None:
    result = run("login", "--hub", hub.url, "--username", "admin", input=ADMIN_PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert f"Logged in to {hub.url} as admin" in result.stdout
    path = config_dir / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    session = saved(config_dir)
    assert session["hub"] == hub.url and session["username"] == "admin"
    whoami = run("whoami")
    assert whoami.exit_code == 0, whoami.output
    assert "admin" in whoami.stdout and "user:admin" in whoami.stdout and hub.url in whoami.stdout
    for output in (result.output, whoami.output):
        assert session["access_token"] not in output and session["refresh_token"] not in output
        assert ADMIN_PASSWORD not in output


def test_login_with_wrong_password_exits_1_and_saves_nothing(
    run: Run, hub: HubProcess, config_dir: Path, make_user: Callable[..., tuple[str, str]]
) -> None:
    username, _ = make_user()
    result = run("login", "--hub", hub.url, "-u", username, "--password-stdin", input="wrong-password\n")
    assert result.exit_code == 1
    assert "Error: invalid username or password (invalid_credentials)" in result.stderr
    assert not (config_dir / "credentials.json").exists()


def test_admin_creates_a_user_who_can_then_log_in(run: Run, hub: HubProcess) -> None:
    login(run, hub, "admin", ADMIN_PASSWORD)
    username, password = f"alice{uuid.uuid4().hex[:6]}", "alice-password-1"
    created = run("admin", "create-user", username, "--role", "user", input=f"{password}\n{password}\n")
    assert created.exit_code == 0, created.output
    assert f"Created user {username} (role user, account user:{username})" in created.stdout
    assert password not in created.output
    login(run, hub, username, password)
    whoami = run("whoami")
    assert whoami.exit_code == 0 and username in whoami.stdout and "user" in whoami.stdout


def test_create_user_twice_is_an_api_error_and_short_password_is_bad_input(
    run: Run, hub: HubProcess, make_user: Callable[..., tuple[str, str]]
) -> None:
    existing, _ = make_user()
    login(run, hub, "admin", ADMIN_PASSWORD)
    dup = run("admin", "create-user", existing, "--password-stdin", input="long-enough-pw\n")
    assert dup.exit_code == 1 and "(user_exists)" in dup.stderr
    short = run("admin", "create-user", f"n{uuid.uuid4().hex[:8]}", "--password-stdin", input="short\n")
    assert short.exit_code == 2 and "password" in short.stderr


def test_admin_mint_then_user_sees_balance_in_tokens(
    run: Run, hub: HubProcess, make_user: Callable[..., tuple[str, str]]
) -> None:
    username, password = make_user()
    login(run, hub, "admin", ADMIN_PASSWORD)
    minted = run("admin", "mint", username, "25")
    assert minted.exit_code == 0, minted.output
    assert f"Minted 25.000000 tokens into user:{username}" in minted.stdout
    account = run("admin", "account", username)
    assert account.exit_code == 0 and "25.000000" in account.stdout and "25000000" in account.stdout
    login(run, hub, username, password)
    balance = run("balance")
    assert balance.exit_code == 0, balance.output
    assert f"user:{username}" in balance.stdout
    assert "25.000000" in balance.stdout and "25000000" in balance.stdout


def test_transfer_in_tokens_and_micro_units_and_list_them(
    run: Run, hub: HubProcess, admin: Client, make_user: Callable[..., tuple[str, str]]
) -> None:
    alice, password = make_user(micro=5_000_000)
    bob, _ = make_user()
    login(run, hub, alice, password)
    first = run("transfer", bob, "1.5")
    assert first.exit_code == 0, first.output
    assert f"Sent 1.500000 tokens to user:{bob}" in first.stdout
    second = run("transfer", f"user:{bob}", "250000u")
    assert second.exit_code == 0 and f"Sent 0.250000 tokens to user:{bob}" in second.stdout
    assert admin.account(bob).available_micro == 1_750_000
    assert admin.account(alice).available_micro == 3_250_000
    listed = run("transfers")
    assert listed.exit_code == 0, listed.output
    assert "-1.500000" in listed.stdout and "-0.250000" in listed.stdout and "+5.000000" in listed.stdout


def test_transfer_with_the_same_key_moves_money_once(
    run: Run, hub: HubProcess, admin: Client, make_user: Callable[..., tuple[str, str]]
) -> None:
    alice, password = make_user(micro=2_000_000)
    bob, _ = make_user()
    login(run, hub, alice, password)
    for _ in range(2):
        result = run("transfer", bob, "1", "--idempotency-key", "rent-2024-05")
        assert result.exit_code == 0, result.output
    assert "Already done earlier" in result.stdout
    assert admin.account(bob).available_micro == 1_000_000


def test_transfer_more_than_the_balance_is_refused(
    run: Run, hub: HubProcess, admin: Client, make_user: Callable[..., tuple[str, str]]
) -> None:
    alice, password = make_user(micro=1_000_000)
    bob, _ = make_user()
    login(run, hub, alice, password)
    result = run("transfer", bob, "1.000001")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "(insufficient_funds)" in result.stderr
    assert admin.account(alice).available_micro == 1_000_000


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("-1", "must be positive"),
        ("abc", "not an amount"),
        ("1.0000001", "too many decimals"),
        ("0", "greater than zero"),
        ("1.5u", "micro-units"),
    ],
)
def test_bad_amounts_exit_2_and_move_nothing(
    run: Run,
    hub: HubProcess,
    admin: Client,
    make_user: Callable[..., tuple[str, str]],
    amount: str,
    message: str,
) -> None:
    alice, password = make_user(micro=3_000_000)
    bob, _ = make_user()
    login(run, hub, alice, password)
    result = run("transfer", bob, amount)
    assert result.exit_code == 2
    assert message in result.stderr
    assert admin.account(alice).available_micro == 3_000_000


def test_a_user_cannot_mint(run: Run, hub: HubProcess, make_user: Callable[..., tuple[str, str]]) -> None:
    username, password = make_user()
    login(run, hub, username, password)
    result = run("admin", "mint", username, "1000")
    assert result.exit_code == 1
    assert "Error: admin role required (forbidden)" in result.stderr


def test_unreachable_hub_exits_3(run: Run) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = run("login", "--hub", dead, "-u", "admin", "--password-stdin", input="whatever-pw\n")
    assert result.exit_code == 3
    assert f"Error: cannot reach hub at {dead}" in result.stderr
    from_env = run("login", "-u", "admin", "--password-stdin", input="whatever-pw\n", hub_url=dead)
    assert from_env.exit_code == 3 and dead in from_env.stderr


def test_hub_url_from_the_environment_and_a_bad_url(run: Run, hub: HubProcess) -> None:
    result = run("login", "-u", "admin", "--password-stdin", input=ADMIN_PASSWORD + "\n", hub_url=hub.url)
    assert result.exit_code == 0 and hub.url in result.stdout
    assert run("whoami").exit_code == 0  # the saved session remembers which hub it belongs to
    bad = run("balance", "--hub", "127.0.0.1:8203")
    assert bad.exit_code == 2 and "must start with http://" in bad.stderr


def test_commands_need_a_login_and_logout_forgets_it(run: Run, hub: HubProcess, config_dir: Path) -> None:
    before = run("balance")
    assert before.exit_code == 1 and "Not logged in — run gpupool login" in before.stderr
    login(run, hub, "admin", ADMIN_PASSWORD)
    out = run("logout")
    assert out.exit_code == 0 and f"Logged out of {hub.url}" in out.stdout
    assert not (config_dir / "credentials.json").exists()
    assert run("balance").exit_code == 1


def test_tokens_are_never_sent_to_a_different_hub(run: Run, hub: HubProcess) -> None:
    login(run, hub, "admin", ADMIN_PASSWORD)
    other = f"http://127.0.0.1:{free_port()}"
    result = run("balance", "--hub", other)
    assert result.exit_code == 1 and f"Not logged in to {other}" in result.stderr


def test_an_expired_session_is_refreshed_and_saved(
    run: Run, hub: HubProcess, config_dir: Path, make_user: Callable[..., tuple[str, str]]
) -> None:
    username, password = make_user(micro=1_000_000)
    login(run, hub, username, password)
    before = saved(config_dir)
    with Client(hub.url, access_token=before["access_token"]) as probe:
        user_id = probe.me().id
    expired = _expired_access_token(user_id, username)
    credentials.save(credentials.Credentials(hub.url, username, expired, before["refresh_token"]))
    result = run("balance")
    assert result.exit_code == 0, result.output
    after = saved(config_dir)
    assert after["access_token"] != expired and after["refresh_token"] != before["refresh_token"]
    assert stat.S_IMODE((config_dir / "credentials.json").stat().st_mode) == 0o600
    assert after["access_token"] not in result.output


def test_a_spent_refresh_token_asks_for_login_again(
    run: Run, hub: HubProcess, config_dir: Path, make_user: Callable[..., tuple[str, str]]
) -> None:
    username, password = make_user()
    login(run, hub, username, password)
    session = saved(config_dir)
    with Client(hub.url, refresh_token=session["refresh_token"]) as thief:
        thief.refresh()  # spends the saved refresh token
    expired = _expired_access_token(0, username)
    credentials.save(credentials.Credentials(hub.url, username, expired, session["refresh_token"]))
    result = run("whoami")
    assert result.exit_code == 1
    assert "(refresh_token_reused) — run gpupool login" in result.stderr


def test_a_damaged_credentials_file_is_reported_and_login_repairs_it(
    run: Run, hub: HubProcess, config_dir: Path
) -> None:
    config_dir.mkdir(parents=True)
    (config_dir / "credentials.json").write_text("{not json")
    broken = run("balance")
    assert broken.exit_code == 1 and "not a valid credentials file" in broken.stderr
    login(run, hub, "admin", ADMIN_PASSWORD)
    assert run("balance").exit_code == 0


def _expired_access_token(user_id: int, username: str) -> str:
    """A correctly signed access token whose expiry has passed, as the hub would have issued it."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": str(user_id), "name": username, "role": "user", "typ": "access"}
    claims |= {"iat": now - 7200, "exp": now - 3600, "jti": uuid.uuid4().hex[:16]}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def test_api_key_create_ls_revoke(
    run: Run, hub: HubProcess, make_user: Callable[..., tuple[str, str]]
) -> None:
    username, password = make_user()
    login(run, hub, username, password)
    made = run("api-key", "create", "--name", "rig-1")
    assert made.exit_code == 0, made.output
    key = made.output.strip().splitlines()[-1]
    assert key.startswith("gpk_")
    listed = run("api-key", "ls")
    assert listed.exit_code == 0 and "rig-1" in listed.output and key not in listed.output
    key_id = made.output.split("API key ", 1)[1].split()[0]
    revoked = run("api-key", "revoke", key_id)
    assert revoked.exit_code == 0, revoked.output
    assert run("api-key", "revoke", key_id).exit_code != 0  # already revoked: the hub says 404
