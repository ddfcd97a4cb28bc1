"""Rich rendering for the CLI: tables on stdout, one-line red errors on stderr.

Consoles are built per call so they write to whatever ``sys.stdout``/``sys.stderr`` are at that moment
(a test runner swaps them). Text from the hub is rendered literally, never as rich markup.
"""

from __future__ import annotations

from datetime import UTC, datetime

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gpupool.client import Balance, TransferPage, TrialBalance, User, format_amount


def _out() -> Console:
    return Console(highlight=False, soft_wrap=False)


def error(message: str) -> None:
    """``Error: …`` in red on stderr, on one line whatever the terminal width."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(Text(f"Error: {message}", style="bold red"))


def info(message: str) -> None:
    _out().print(Text(message), soft_wrap=True)


def tokens(micro: int) -> str:
    return f"{format_amount(micro)} tokens"


def whoami_table(hub: str, user: User) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in (
        ("hub", hub),
        ("username", user.username),
        ("role", user.role),
        ("account", user.account),
    ):
        table.add_row(key, Text(value))
    _out().print(table)


def balance_table(balance: Balance) -> None:
    table = Table(title=Text(f"Balance of {balance.account}"))
    table.add_column("", style="bold")
    table.add_column("tokens", justify="right")
    table.add_column("micro-units", justify="right")
    total = balance.available_micro + balance.held_micro
    for label, micro in (
        ("available", balance.available_micro),
        ("held", balance.held_micro),
        ("total", total),
    ):
        table.add_row(label, format_amount(micro), str(micro))
    _out().print(table)


def transfers_table(page: TransferPage, own_account: str) -> None:
    """Each posting once, signed from the caller's side: money in is +, money out is -."""
    table = Table(title=Text(f"Transfers of {own_account}"), box=box.SIMPLE_HEAD)
    table.add_column("id", justify="right")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("kind")
    table.add_column("from", overflow="fold")
    table.add_column("to", overflow="fold")
    table.add_column("tokens", justify="right", no_wrap=True)
    for t in page.transfers:
        sign = "-" if t.source == own_account else "+"
        when = datetime.fromtimestamp(t.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        style = "red" if sign == "-" else "green"
        table.add_row(
            str(t.id),
            when,
            t.kind,
            Text(t.source or "-"),
            Text(t.to or "-"),
            Text(f"{sign}{format_amount(t.amount_micro)}", style=style),
        )
    console = _out()
    if not page.transfers:
        console.print(Text(f"No transfers yet for {own_account}."))
        return
    console.print(table)
    if page.next_before is not None:
        console.print(Text(f"More: gpupool transfers --before {page.next_before}"))


def trial_balance_table(tb: TrialBalance) -> None:
    table = Table(title=Text("Trial balance: " + ("balanced" if tb.balanced else "NOT BALANCED")))
    table.add_column("account type")
    table.add_column("total (tokens)", justify="right")
    for kind, micro in sorted(tb.totals_by_type.items()):
        table.add_row(kind, format_amount(micro))
    table.add_row(Text("sum of all entries", style="bold"), format_amount(tb.total_micro))
    _out().print(table)


def print_table(table: Table) -> None:
    _out().print(table)


def rewards_table(rewards: dict[str, object]) -> None:
    """A node owner's ledger balance and reward history (``GET /v1/rewards/balance``)."""
    table = Table(title=Text(f"Balance of {rewards['wallet_address']}"))
    table.add_column("", style="bold")
    table.add_column("tokens", justify="right")
    for label, key in (
        ("available", "balance"),
        ("pending rewards", "pending_rewards"),
        ("rewards paid so far", "total_rewards_distributed"),
    ):
        table.add_row(label, format_amount(int(str(rewards[key]))))
    _out().print(table)
