"""``gpupool task …``: submit work, list it, follow its output live, stop it, read its result."""

from __future__ import annotations

import hashlib
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from gpupool.cli import output
from gpupool.cli.user_cmds import EXIT_API, HubOpt, fail, reporting, session
from gpupool.client import Client, format_amount, parse_amount
from gpupool.core.scheduling import TERMINAL_STATES, TaskState
from gpupool.hub.files import safe_relative

FINAL = {s.value for s in TERMINAL_STATES}
task_app = typer.Typer(no_args_is_help=True, help="Submit and watch tasks.")


@task_app.command("submit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit(
    ctx: typer.Context,
    directory: Annotated[
        str | None, typer.Argument(help="A folder to upload as the task's files (its working dir)")
    ] = None,
    max_price: Annotated[str, typer.Option(help="Price cap, tokens per 1000 GPU-seconds")] = "1",
    timeout: Annotated[float, typer.Option(help="Seconds before the task is stopped")] = 3600.0,
    gpus: Annotated[int | None, typer.Option(help="GPUs needed")] = None,
    vram: Annotated[float | None, typer.Option(help="Minimum VRAM per GPU, GB")] = None,
    env: Annotated[list[str] | None, typer.Option(help="KEY=VALUE (repeatable)")] = None,
    name: Annotated[str, typer.Option()] = "task",
    max_attempts: Annotated[int, typer.Option(min=1, max=20)] = 3,
    wait: Annotated[bool, typer.Option(help="Stream the output and exit with the task's exit code")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print the task id only")] = False,
    hub: HubOpt = None,
) -> None:
    """Submit [DIR] -- COMMAND: DIR's files are uploaded (with a progress bar); prints the task id."""
    command = [a for a in ctx.args if a != "--"]
    folder = Path(directory) if directory is not None and Path(directory).is_dir() else None
    if directory is not None and folder is None:
        command.insert(0, directory)  # no such folder: it was the command's first word
    if not command:
        fail("give the command after --, e.g. gpupool task submit -- python train.py", 2)
    with reporting():
        body: dict[str, Any] = {
            "name": name,
            "command": command,
            "env": dict(_pair(e) for e in env or []),
            "requirements": {
                k: v for k, v in {"gpu_count": gpus, "min_vram_gb": vram}.items() if v is not None
            },
            "max_price_micro_per_ksec": parse_amount(max_price),
            "timeout_sec": timeout,
            "max_attempts": max_attempts,
        }
        with session(hub) as (client, _saved), _bundled(folder) as bundle:
            submitted = _upload(client, body, bundle, show_progress=not quiet)
            task_id = submitted["task_id"]
            held = format_amount(int(submitted["hold"]))
            output.info(task_id if quiet else f"{task_id} queued (held {held} tokens in escrow)")
            if wait:
                raise typer.Exit(_follow(client, task_id))


@contextmanager
def _bundled(folder: Path | None) -> Iterator[Path | None]:
    """``folder`` packed as a temporary .tar.gz, or None."""
    if folder is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "bundle.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    tar.add(path, arcname=path.relative_to(folder).as_posix())
        yield archive


def _upload(
    client: Client, body: dict[str, Any], bundle: Path | None, *, show_progress: bool = True
) -> dict[str, Any]:
    if bundle is None or not show_progress:
        return client.submit_task(body, bundle)
    with Progress(transient=True) as progress:
        bar = progress.add_task("uploading", total=bundle.stat().st_size)
        return client.submit_task(body, bundle, lambda sent, _total: progress.update(bar, completed=sent))


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        fail(f"--env takes KEY=VALUE, got {text!r}", 2)
    return key, value


def _follow(client: Client, task_id: str) -> int:
    for _seq, stream, data in client.task_output(task_id):
        (sys.stderr if stream == "stderr" else sys.stdout).write(data)
    final = client.task(task_id)
    if final["status"] != "succeeded":
        output.error(f"task {task_id} {final['status']} (exit code {final['exit_code']})")
    code = final["exit_code"]
    return int(code) if code is not None else EXIT_API


@task_app.command("ls")
def ls(
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    status: Annotated[
        list[TaskState] | None, typer.Option("--status", help="only these states (repeat for more)")
    ] = None,
    hub: HubOpt = None,
) -> None:
    """Your tasks, newest first."""
    with reporting(), session(hub) as (client, _saved):
        rows = client.tasks(limit, [s.value for s in status or []])
    if not rows:
        wanted = " or ".join(s.value for s in status or [])
        output.info(f"No {wanted} tasks." if wanted else "No tasks yet.")
        return
    table = Table(title=Text("Tasks"))
    for column in ("task", "name", "status", "node", "exit", "cost"):
        table.add_column(column)
    for t in rows:
        cost = format_amount(int(t["cost"])) if t["cost"] is not None else "-"
        table.add_row(
            t["task_id"], Text(t["name"]), t["status"], t["miner_id"] or "-", _or_dash(t["exit_code"]), cost
        )
    output.print_table(table)


def _or_dash(value: Any) -> str:
    """A field as text; one the task has no value for yet (None) as ``-``, while 0 stays ``0``."""
    return "-" if value is None else str(value)


@task_app.command("show")
def show(task_id: str, hub: HubOpt = None) -> None:
    """Status, node, attempts, usage and cost of one task."""
    with reporting(), session(hub) as (client, _saved):
        t = client.task(task_id)
    table = Table(show_header=False, box=None)
    for key in ("task_id", "name", "status", "miner_id", "attempts", "exit_code", "outcome"):
        table.add_row(key, Text(_or_dash(t[key])))
    if t.get("waiting_reason"):
        table.add_row("waiting", Text(str(t["waiting_reason"])))
    table.add_row("held", format_amount(int(t["hold"])))
    table.add_row("cost", format_amount(int(t["cost"])) if t["cost"] is not None else "-")
    for key, value in (t.get("usage") or {}).items():
        table.add_row(f"usage.{key}", str(value))
    output.print_table(table)


@task_app.command("logs")
def logs(
    task_id: str,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep streaming until the task ends")
    ] = False,
    hub: HubOpt = None,
) -> None:
    """Print a task's output (stdout and stderr in order)."""
    with reporting(), session(hub) as (client, _saved):
        if follow:
            _follow(client, task_id)
            return
        for _seq, stream, data in client.task_output(task_id):
            (sys.stderr if stream == "stderr" else sys.stdout).write(data)


@task_app.command("stop")
def stop(
    task_id: str,
    wait: Annotated[float, typer.Option(help="Seconds to wait for a running task to end")] = 10.0,
    hub: HubOpt = None,
) -> None:
    """Stop a task; you pay for what already ran. Prints ``stopped``, or ``stopping`` while it ends."""
    with reporting(), session(hub) as (client, _saved):
        status = client.stop_task(task_id)["status"]
        deadline = time.monotonic() + wait
        while status not in FINAL and time.monotonic() < deadline:
            time.sleep(0.25)
            status = client.task(task_id)["status"]
    output.info(f"{task_id}: {'stopping' if status not in FINAL else status}")


@task_app.command("result")
def result(
    task_id: str,
    out: Annotated[
        Path | None, typer.Option("-o", "--output", help="Download the artifacts into this folder")
    ] = None,
    hub: HubOpt = None,
) -> None:
    """Exit code and artifacts of a finished task (downloaded and checked with -o)."""
    with reporting(), session(hub) as (client, _saved):
        r = client.task(task_id, "/result")
        output.info(f"{task_id}: {r['status']}, exit code {r['exit_code']}")
        for a in r["artifacts"]:
            output.info(f"  {a['path']}  {a['size']} bytes  sha256 {a['sha256']}")
            if out is not None:
                target = out / safe_relative(a["path"])
                client.download_artifact(task_id, a["path"], target)
                if hashlib.sha256(target.read_bytes()).hexdigest() != a["sha256"]:
                    fail(f"{a['path']}: downloaded bytes do not match the sha256 the node reported", EXIT_API)
