"""User and admin commands over the SDK: login, balances, transfers, user creation, minting.

Amounts are typed in tokens (``1.5``) or micro-units (``1500000u``). Tokens and passwords are never
printed; passwords come from a hidden prompt or, for scripts, ``--password-stdin``.

Exit codes, for scripts:

    0  done
    1  the hub refused (bad credentials, not allowed, insufficient funds, …) or nobody is logged in
    2  bad input or usage: an amount or URL that does not parse, or a field the hub rejects (422)
    3  the hub cannot be reached
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Annotated, Any, NoReturn

import typer

from gpupool.cli import credentials, output
from gpupool.cli.credentials import Credentials, CredentialsError
from gpupool.client import AmountError, Client, ClientError, Tokens, Transfer, parse_amount

EXIT_API = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
DEFAULT_HUB = "http://127.0.0.1:8203"
# Lets "-1" reach the amount parser (and its clear message) instead of being read as an unknown option.
AMOUNT_CONTEXT: dict[str, Any] = {"ignore_unknown_options": True}
_SESSION_CODES = {
    "token_expired",
    "invalid_token",
    "token_revoked",
    "refresh_token_reused",
    "unauthenticated",
}

HubOpt = Annotated[
    str | None,
    typer.Option(
        "--hub", envvar="GPUPOOL_HUB_URL", help="Hub URL [default: the logged-in hub, else 127.0.0.1:8203]"
    ),
]
PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]
KeyOpt = Annotated[
    str | None,
    typer.Option("--idempotency-key", help="Repeat a key to repeat a request safely [default: a new UUID]"),
]

admin_app = typer.Typer(
    no_args_is_help=True, help="Admin: create, disable and delete users, mint tokens, inspect accounts."
)


def fail(message: str, exit_code: int) -> NoReturn:
    output.error(message)
    raise typer.Exit(exit_code)


@contextmanager
def reporting() -> Iterator[None]:
    """Turn SDK, amount and credentials errors into one red line and the documented exit code."""
    try:
        yield
    except ClientError as exc:
        if exc.status == 0:
            fail(exc.message, EXIT_UNREACHABLE)
        hint = " — run gpupool login" if exc.status == 401 and exc.code in _SESSION_CODES else ""
        fail(f"{exc.message} ({exc.code}){hint}", EXIT_USAGE if exc.status == 422 else EXIT_API)
    except AmountError as exc:
        fail(str(exc), EXIT_USAGE)
    except CredentialsError as exc:
        fail(str(exc), EXIT_API)


def resolve_hub(hub: str | None, saved: Credentials | None) -> str:
    """``--hub``/``GPUPOOL_HUB_URL``, else the logged-in hub, else the local default."""
    url = (hub or (saved.hub if saved else "") or DEFAULT_HUB).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        fail(f"hub URL must start with http:// or https://, got {url!r}", EXIT_USAGE)
    return url


@contextmanager
def session(hub: str | None) -> Iterator[tuple[Client, Credentials]]:
    """A client for the saved session; refreshed tokens are saved as they arrive."""
    saved = credentials.load()
    url = resolve_hub(hub, saved)
    if saved is None:
        fail("Not logged in — run gpupool login", EXIT_API)
    if saved.hub != url:  # never send one hub's tokens to another
        fail(f"Not logged in to {url} — run gpupool login --hub {url}", EXIT_API)
    current = saved

    def persist(tokens: Tokens) -> None:
        nonlocal current
        current = replace(current, access_token=tokens.access_token, refresh_token=tokens.refresh_token)
        credentials.save(current)

    with Client(url, saved.access_token, saved.refresh_token, on_tokens=persist) as client:
        yield client, saved


def read_password(from_stdin: bool, label: str, confirm: bool) -> str:
    if not from_stdin:
        prompted: str = typer.prompt(label, hide_input=True, confirmation_prompt=confirm)
        return prompted
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        fail("no password on stdin", EXIT_USAGE)
    return line


def _load_ignoring_damage() -> Credentials | None:
    try:
        return credentials.load()
    except CredentialsError:
        return None  # logging in again is how a damaged file gets fixed


def login(
    hub: HubOpt = None,
    username: Annotated[str | None, typer.Option("--username", "-u", help="[default: prompt]")] = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Log in to a hub and save the session (mode 0600)."""
    url = resolve_hub(hub, _load_ignoring_damage())
    name: str = username or typer.prompt("Username")
    password = read_password(password_stdin, "Password", confirm=False)
    with reporting(), Client(url) as client:
        tokens = client.login(name, password)
        user = client.me()
        path = credentials.save(Credentials(url, user.username, tokens.access_token, tokens.refresh_token))
    output.info(f"Logged in to {url} as {user.username} (role {user.role}); session saved in {path}.")


def logout() -> None:
    """Forget the saved session."""
    saved = _load_ignoring_damage()
    if credentials.delete():
        output.info(f"Logged out of {saved.hub}." if saved else "Logged out.")
    else:
        output.info("Not logged in.")


def whoami(hub: HubOpt = None) -> None:
    """Show who the saved session belongs to."""
    with reporting(), session(hub) as (client, _saved):
        user = client.me()
        output.whoami_table(client.base_url, user)


def balance(
    address: Annotated[
        str | None, typer.Option(help="A node owner's 0x address: its balance and rewards instead of yours")
    ] = None,
    hub: HubOpt = None,
) -> None:
    """Show your available and held balance (or a node owner's balance and rewards)."""
    with reporting(), session(hub) as (client, _saved):
        if address is None:
            output.balance_table(client.balance())
            return
        rewards = client.reward_balance(address)
    output.rewards_table(rewards)


def transfer(
    to: Annotated[str, typer.Argument(help="Username, user:<name> or 0x… owner address")],
    amount: Annotated[str, typer.Argument(help="Tokens (1.5) or micro-units (1500000u)")],
    idempotency_key: KeyOpt = None,
    hub: HubOpt = None,
) -> None:
    """Send tokens to another account."""
    with reporting():
        amount_micro = parse_amount(amount)
        with session(hub) as (client, _saved):
            _report("Sent", "to", client.transfer(to, amount_micro, idempotency_key))


def transfers(
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first")] = 50,
    before: Annotated[int | None, typer.Option(min=1, help="Only transfers older than this id")] = None,
    hub: HubOpt = None,
) -> None:
    """List your transfers, newest first."""
    with reporting(), session(hub) as (client, saved):
        output.transfers_table(client.transfers(limit=limit, before=before), f"user:{saved.username}")


@admin_app.command("create-user")
def create_user(
    username: Annotated[str, typer.Argument(help="The new user's name")],
    role: Annotated[str, typer.Option(help="admin, user or coordinator")] = "user",
    password_stdin: PasswordStdinOpt = False,
    hub: HubOpt = None,
) -> None:
    """Create a user (prompts for their password twice)."""
    with reporting(), session(hub) as (client, _saved):
        password = read_password(password_stdin, f"Password for {username}", confirm=True)
        user = client.create_user(username, password, role)
    output.info(f"Created user {user.username} (role {user.role}, account {user.account}).")


@admin_app.command("disable-user")
def disable_user(
    username: Annotated[str, typer.Argument(help="The user to disable")], hub: HubOpt = None
) -> None:
    """Stop a user from signing in; every token they hold stops working at once."""
    with reporting(), session(hub) as (client, _saved):
        user = client.manage_user(username, "disable")
    output.info(f"Disabled user {user.username}; their sessions are over.")


@admin_app.command("enable-user")
def enable_user(
    username: Annotated[str, typer.Argument(help="The user to enable")], hub: HubOpt = None
) -> None:
    """Let a disabled user sign in again (their old tokens stay dead)."""
    with reporting(), session(hub) as (client, _saved):
        user = client.manage_user(username, "enable")
    output.info(f"Enabled user {user.username}.")


@admin_app.command("revoke-sessions")
def revoke_sessions(
    username: Annotated[str, typer.Argument(help="The user whose sessions end")], hub: HubOpt = None
) -> None:
    """End every session of a user: all their access and refresh tokens stop working."""
    with reporting(), session(hub) as (client, _saved):
        user = client.manage_user(username, "revoke-sessions")
    output.info(f"Revoked every session of {user.username}.")


@admin_app.command("delete-user")
def delete_user(
    username: Annotated[str, typer.Argument(help="The user to delete (their accounts must be empty)")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
    hub: HubOpt = None,
) -> None:
    """Delete a user; a new user of the same name later is a different user."""
    if not yes and not typer.confirm(f"Delete user {username}?"):
        fail("nothing deleted", EXIT_USAGE)
    with reporting(), session(hub) as (client, _saved):
        client.delete_user(username)
    output.info(f"Deleted user {username}.")


@admin_app.command("mint", context_settings=AMOUNT_CONTEXT)
def mint(
    to: Annotated[str, typer.Argument(help="Username, user:<name> or 0x… owner address")],
    amount: Annotated[str, typer.Argument(help="Tokens (25) or micro-units (25000000u)")],
    idempotency_key: KeyOpt = None,
    hub: HubOpt = None,
) -> None:
    """Create new tokens in an account."""
    with reporting():
        amount_micro = parse_amount(amount)
        with session(hub) as (client, _saved):
            _report("Minted", "into", client.mint(to, amount_micro, idempotency_key))


@admin_app.command("account")
def account(
    name: Annotated[str, typer.Argument(help="Account: user:<name>, a bare username or 0x… address")],
    hub: HubOpt = None,
) -> None:
    """Show any account's balance."""
    with reporting(), session(hub) as (client, _saved):
        output.balance_table(client.account(name))


@admin_app.command("trial-balance")
def trial_balance(hub: HubOpt = None) -> None:
    """Check the ledger: every entry sums to zero and cached balances match (exit 1 if not)."""
    with reporting(), session(hub) as (client, _saved):
        tb = client.trial_balance()
    output.trial_balance_table(tb)
    if not tb.balanced:
        fail("the ledger is not balanced", EXIT_API)


def _report(verb: str, preposition: str, posted: Transfer) -> None:
    moved = f"{output.tokens(posted.amount_micro)} {preposition} {posted.to}"
    if posted.replayed:
        output.info(
            f"Already done earlier (same idempotency key): {verb.lower()} {moved} (posting #{posted.id})."
        )
    else:
        output.info(f"{verb} {moved} (posting #{posted.id}).")
