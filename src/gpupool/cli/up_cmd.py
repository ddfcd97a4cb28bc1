"""``gpupool up``: the hub and one local node in one command, on the embedded SQLite default.

For a laptop or a single GPU box. The hub runs in this process; the node agent runs as a child
process (its own key under ``DATA_DIR/node``) and registers with the hub like any other node. Ctrl-C
(SIGINT to the whole process group, as a terminal sends it) or SIGTERM stops the node first, while the
hub still answers: it stops its tasks, reports them and logs out. Only then does the hub stop; both
exit 0 and no task is left ``running``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer

from gpupool import crypto
from gpupool.config import HubSettings

DEFAULT_LOCAL_OWNER = "local"
# The node stops its tasks (SIGTERM, then SIGKILL after 5 s), reports each (retried) and logs out.
NODE_STOP_S = 60.0


def up(
    port: Annotated[
        int, typer.Option(help="Hub port [env GPUPOOL_HUB_PORT]", envvar="GPUPOOL_HUB_PORT")
    ] = 8203,
    grpc_port: Annotated[
        int,
        typer.Option(
            help="Hub gRPC port, 0: any free one [env GPUPOOL_HUB_GRPC_PORT]", envvar="GPUPOOL_HUB_GRPC_PORT"
        ),
    ] = 50051,
    node_port: Annotated[int, typer.Option(help="The local node's health port")] = 8080,
    owner_address: Annotated[
        str | None,
        typer.Option(
            envvar="OWNER_ADDRESS", help="Owner of the local node [default: one derived from its key]"
        ),
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="Where the database and keys live")] = Path("./data"),
) -> None:
    """Start the hub and one local node; print where to look and how to submit work."""
    from gpupool.main import build_app
    from gpupool.serving import serve

    settings = HubSettings(port=port, grpc_port=grpc_port, data_dir=data_dir)
    node_dir = data_dir / "node"
    key = crypto.load_or_create_key(node_dir / "key")
    owner = crypto.normalize_owner_address(owner_address) if owner_address else local_owner(key)
    url = f"http://{settings.host}:{port}"
    node = _start_node(url, owner, node_dir, node_port)
    typer.echo(
        f"gpupool up: hub on {url} (API docs {url}/docs, health {url}/v1/health), database {settings.db_url}"
    )
    if settings.grpc_enabled and grpc_port:
        typer.echo(f"gRPC (HiveMind nodepool) on {settings.host}:{grpc_port}")
    typer.echo(f"local node {key.pubkey[:16]}… (owner {owner}) health on http://127.0.0.1:{node_port}/health")
    for line in how_to_use(cli_command(), url):
        typer.echo(line)
    try:
        serve(build_app(settings), settings.host, port, settings.log_level, before_stop=lambda: _stop(node))
    finally:
        _stop(node)


def cli_command() -> str:
    """How to call the CLI from another terminal: the checkout's ``./gpupool`` wrapper where it is
    (``make run``), else the ``gpupool`` script of this interpreter, else a bare ``gpupool``."""
    if Path("gpupool").is_file() and os.access("gpupool", os.X_OK):
        return "./gpupool"
    script = Path(sys.executable).parent / "gpupool"
    on_path = shutil.which("gpupool")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return "gpupool"
    return str(script) if script.is_file() else "gpupool"


def how_to_use(cli: str, url: str) -> list[str]:
    """The first commands, exactly as they are typed, printed before the hub starts."""
    venv = Path(sys.executable).parent
    return [
        f"Use the CLI from another terminal in this folder: {cli} …"
        f"  (or: source {venv}/activate, then gpupool …)",
        f"  {cli} login --hub {url} --username admin      # the password: printed below on first start",
        f"  {cli} task submit --wait -- python3 -c \"print('hello')\"",
        f"  dashboard: {url}/  ·  every command: {cli} --help  ·  walkthrough: README.md, First hour",
    ]


def local_owner(key: crypto.KeyPair) -> str:
    """A stable owner address for a single-machine pool: the last 20 bytes of keccak(pubkey), EIP-55."""
    from Crypto.Hash import keccak

    digest = keccak.new(digest_bits=256, data=bytes.fromhex(key.pubkey)).hexdigest()
    return crypto.to_checksum_address("0x" + digest[-40:])


def _start_node(url: str, owner: str, node_dir: Path, node_port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REGISTRY_URL": url,
        "OWNER_ADDRESS": owner,
        "DATA_DIR": str(node_dir),
        "LISTEN_ADDR": f"127.0.0.1:{node_port}",
    }
    # The node registers only once the hub answers; it is started right away and waits for it.
    return subprocess.Popen([sys.executable, "-m", "gpupool.cli.up_cmd", "--wait-node", url], env=env)


def _stop(node: subprocess.Popen[bytes]) -> None:
    """Stop the node and wait for it; a terminal's Ctrl-C may have reached it already (no harm)."""
    if node.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            node.send_signal(signal.SIGTERM)
        try:
            node.wait(NODE_STOP_S)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


def _wait_then_run_node(url: str) -> int:
    """Child process: wait (up to a minute) for the hub to answer, then become the node agent."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    from gpupool.cli.app import app

    sys.argv = ["gpupool", "node"]
    app()
    return 0


if __name__ == "__main__" and sys.argv[1:2] == ["--wait-node"]:
    raise SystemExit(_wait_then_run_node(sys.argv[2]))
