"""The node agent: identity, registration before anything else, heartbeats, graceful stop (SPEC §4).

Start-up is strict: load or create the key, ask the registry about it, register the worker if it is
unknown, register the miner, and only then serve ``/health`` and open the heartbeat channel. A failure
there ends the process with the seed's log lines and a non-zero exit code, so a supervisor sees it.
After start-up the agent never gives up: a lost hub is retried with jittered exponential backoff, and a
refused session (hub restarted past its lease, session expired) is answered by registering again.

Exit codes: 0 clean stop (SIGTERM/SIGINT), 1 registration failed, 2 missing or invalid configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from gpupool import crypto
from gpupool.bounds import MAX_NODE_WS_FRAME_BYTES
from gpupool.bundles import BundleLimits
from gpupool.config import NodeSettings
from gpupool.errors import GpupoolError, InvalidInput
from gpupool.heartbeat_protocol import BATCH_SUBPROTOCOL, MAX_BATCH, envelope, opened
from gpupool.node import gpu
from gpupool.node.dstack import fetch_dstack_inventory

log = logging.getLogger("gpupool.node")

EXIT_REGISTRATION = 1
EXIT_CONFIG = 2
SESSION_REFUSED = {4401, 4403}


class ConfigError(Exception):
    """A required setting is missing or invalid; the message is printed as the seed prints it."""


class RegistrationError(Exception):
    """The registry could not be reached or refused this node."""


def check_settings(settings: NodeSettings) -> tuple[str, str]:
    """The registry URL and the EIP-55 owner address, or ConfigError with the seed's message."""
    if not settings.registry_url:
        raise ConfigError("Error: REGISTRY_URL environment variable is required for worker registration")
    if not settings.owner_address:
        raise ConfigError("Error: OWNER_ADDRESS environment variable is required for worker registration")
    if not settings.registry_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"Error: REGISTRY_URL must start with http:// or https://, got {settings.registry_url!r}"
        )
    try:
        owner = crypto.normalize_owner_address(settings.owner_address)
    except InvalidInput as exc:
        raise ConfigError(f"Error: OWNER_ADDRESS is invalid: {exc.message}") from exc
    return settings.registry_url.rstrip("/"), owner


class Backoff:
    """Full-jitter exponential backoff: 0.5 s, 1 s, 2 s … capped, each wait uniform in [0, cap]."""

    def __init__(self, base_s: float = 0.5, max_s: float = 30.0) -> None:
        self.base_s, self.max_s, self.attempt = base_s, max_s, 0

    def next(self) -> float:
        cap = min(self.max_s, self.base_s * (2**self.attempt))
        self.attempt += 1
        return random.uniform(cap / 2, cap)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class NodeAgent:
    settings: NodeSettings
    registry_url: str
    owner: str
    key: crypto.KeyPair
    nvml: gpu.NvmlModule | None = None
    miner_id: str | None = None
    session_token: str | None = None
    heartbeat_s: float = 10.0
    queue_len: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    on_command: Callable[[dict[str, Any]], None] | None = None
    queue_source: Callable[[], int] | None = None
    _socket: ClientConnection | None = None
    _acks: dict[str, asyncio.Future[int | None]] = field(default_factory=dict)
    # Results waiting for the socket, when it batches: those ready in one tick leave in one frame.
    _outbox: list[dict[str, Any]] = field(default_factory=list)
    _flusher: asyncio.Task[None] | None = None

    # -- inventory ------------------------------------------------------------------------------------
    def read_inventory(self) -> gpu.Inventory:
        if self.settings.dstack_url:
            return fetch_dstack_inventory(self.settings.dstack_url)
        return gpu.read_inventory(self.nvml)

    def heartbeat_body(self) -> dict[str, Any]:
        telemetry = [] if self.settings.dstack_url else gpu.read_telemetry(self.nvml)
        return {
            "ts": time.time(),
            "queue_len": self.queue_source() if self.queue_source else self.queue_len,
            "gpus": gpu.heartbeat_gpus(telemetry),
            "mem_free_gb": gpu.mem_free_gb(telemetry),
        }

    # -- registration ---------------------------------------------------------------------------------
    async def register(self, http: httpx.AsyncClient) -> None:
        """``/permissions`` → ``/workers`` when unknown → ``/v1/miners/register``; RegistrationError else."""
        try:
            inventory = await asyncio.to_thread(self.read_inventory)
            perms = await self._call(http, "GET", f"/permissions/{self.key.pubkey}")
            if not perms.get("registered") or perms.get("write", {}).get("mode") != "AllowAll":
                worker = {
                    "pubkey": self.key.pubkey,
                    "owner": self.owner,
                    "node_type": self.settings.node_type,
                }
                await self._call(http, "POST", "/workers", self._signed(worker))
            out = await self._call(http, "POST", "/v1/miners/register", self._signed(self._spec(inventory)))
        except (httpx.HTTPError, GpupoolError, OSError) as exc:
            raise RegistrationError(str(exc) or repr(exc)) from exc
        self.miner_id, self.session_token = out["miner_id"], out["session_token"]
        self.heartbeat_s = float(out.get("next_heartbeat_sec", 10.0))

    def _spec(self, inventory: gpu.Inventory) -> dict[str, Any]:
        s = self.settings
        body: dict[str, Any] = {
            "pubkey": self.key.pubkey,
            "owner": self.owner,
            "addr": s.advertise_addr or f"{local_ip(self.registry_url)}:{s.listen_host_port[1]}",
            "proto": "http",
            "gpus": gpu.registration_gpus(inventory),
            "cpu_cores": inventory.cpu_cores,
            "ram_gb": inventory.ram_gb,
            "price_token_per_ksec": s.price_token_per_ksec,
            "max_parallel": s.max_parallel,
            "region": s.region,
            "tags": s.tags,
            "capabilities": s.capabilities,
        }
        if s.miner_id:
            body["miner_id"] = s.miner_id
        return body

    def _signed(self, body: dict[str, Any]) -> dict[str, Any]:
        return crypto.sign_body(self.key, crypto.KIND_REGISTRATION, body, created_at=int(time.time()))

    async def _call(
        self, http: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        headers = {"X-Api-Key": self.settings.api_key.get_secret_value()} if self.settings.api_key else {}
        resp = await http.request(method, path, json=body, headers=headers)
        if resp.status_code >= 400:
            try:
                error = resp.json()["error"]
                detail = f"{error['message']} ({error['code']}, HTTP {resp.status_code})"
            except (ValueError, KeyError, TypeError):
                detail = f"HTTP {resp.status_code}: {resp.text[:200]}"
            raise RegistrationError(f"{method} {path}: {detail}")
        result: dict[str, Any] = resp.json()
        return result

    # -- heartbeats -----------------------------------------------------------------------------------
    async def heartbeat_forever(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        """Keep a heartbeat socket open; reconnect with backoff, register again when refused."""
        backoff = Backoff(max_s=self.settings.backoff_max_sec)
        must_register = False
        while not stop.is_set():
            try:
                if must_register:
                    await self.register(http)
                    log.info(
                        "Worker registration completed successfully (re-registered as %s)", self.miner_id
                    )
                    must_register = False
                await self._beat_on_socket(stop, backoff)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                must_register = code in SESSION_REFUSED
                log.warning(
                    "heartbeat channel closed (%s); %s",
                    code,
                    "registering again" if must_register else "reconnecting",
                )
            except (OSError, InvalidHandshake, TimeoutError, RegistrationError) as exc:
                log.warning("hub unreachable or refusing (%s); retrying", exc)
            self.connected.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff.next())

    async def _beat_on_socket(self, stop: asyncio.Event, backoff: Backoff) -> None:
        base = self.registry_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        url = f"{base}/v1/miners/heartbeat?session_token={self.session_token}"
        async with websockets.connect(
            url,
            open_timeout=10,
            close_timeout=2,
            compression=None,
            max_size=MAX_NODE_WS_FRAME_BYTES,
            subprotocols=[Subprotocol(BATCH_SUBPROTOCOL)],
        ) as ws:
            self._socket = ws
            try:
                await self._converse(ws, stop, backoff)
            finally:
                self._socket = None
                self._outbox.clear()
                for pending in self._acks.values():  # their senders fall back to HTTP
                    if not pending.done():
                        pending.set_result(None)

    async def _converse(self, ws: ClientConnection, stop: asyncio.Event, backoff: Backoff) -> None:
        """Beat every ``heartbeat_s``; in between, take commands and acknowledgements of results."""
        while not stop.is_set():
            await ws.send(json.dumps(await asyncio.to_thread(self.heartbeat_body)))
            deadline = time.monotonic() + self.heartbeat_s
            while (left := deadline - time.monotonic()) > 0 and not stop.is_set():
                try:
                    messages = opened(json.loads(await asyncio.wait_for(ws.recv(), min(left, 0.5))))
                except TimeoutError:
                    continue
                except (ValueError, RecursionError):  # RecursionError: JSON nested too deep to parse
                    log.warning("the hub sent a frame that is not a message; ignored")
                    continue
                for message in messages:
                    self._take(message, backoff)

    def _take(self, message: Any, backoff: Backoff) -> None:
        """One message from the hub: an ack of a beat or of a result, or a command."""
        if not isinstance(message, dict):
            return
        if message.get("type") == "ack":
            self.connected.set()
            backoff.reset()
            self.heartbeat_s = float(message.get("next_heartbeat_sec", self.heartbeat_s))
        elif message.get("type") == "result_ack":
            pending = self._acks.get(str(message.get("task_id")))
            if pending is not None and not pending.done():
                pending.set_result(int(message.get("status", 500)))
        elif self.on_command is not None and message.get("type") in ("assign", "stop"):
            self.on_command(message)

    async def report(self, task_id: str, signed: dict[str, Any], timeout_s: float = 10.0) -> int | None:
        """Send a signed result on the heartbeat socket: the status the hub answered with (as HTTP
        would), or None when there is no socket or no answer came (the caller then uses HTTP)."""
        ws = self._socket
        if ws is None:
            return None
        pending = self._acks[task_id] = asyncio.get_running_loop().create_future()
        message = {"type": "result", "result": signed}
        try:
            if ws.subprotocol == BATCH_SUBPROTOCOL:
                self._outbox.append(message)
                if self._flusher is None:
                    self._flusher = asyncio.create_task(self._flush())
            else:
                await ws.send(json.dumps(message))
            return await asyncio.wait_for(pending, timeout_s)
        except (ConnectionClosed, OSError, TimeoutError):
            return None
        finally:
            self._acks.pop(task_id, None)

    async def _flush(self) -> None:
        """Send the outbox in envelopes; what is queued while one is sent goes in the next."""
        try:
            await asyncio.sleep(0)  # results reported in this same tick join the first envelope
            while self._outbox and (ws := self._socket) is not None:
                batch, self._outbox = self._outbox[:MAX_BATCH], self._outbox[MAX_BATCH:]
                await ws.send(json.dumps(envelope(batch)))
        except (ConnectionClosed, OSError):
            pass  # the socket's end resolves every waiting report; their senders use HTTP
        finally:
            self._flusher = None

    async def logout(self, http: httpx.AsyncClient) -> None:
        if self.session_token is None:
            return
        with contextlib.suppress(httpx.HTTPError):
            await http.post("/v1/miners/logout", json={"session_token": self.session_token}, timeout=3)


def local_ip(registry_url: str) -> str:
    """The address this machine uses to reach the registry (what others can reach us on)."""
    host = urlsplit(registry_url).hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((host, 9))
            return str(sock.getsockname()[0])
        except OSError:
            return "127.0.0.1"


async def serve(settings: NodeSettings) -> int:
    """Register, then serve ``/health`` and heartbeat until SIGTERM/SIGINT; returns the exit code."""
    import uvicorn

    from gpupool.node.health import create_health_app
    from gpupool.node.metrics import NodeCollector, metrics_route
    from gpupool.node.worker import TaskWorker
    from gpupool.pow.api import pow_routes
    from gpupool.pow.service import PowService
    from gpupool.serving import CleanExitServer, redact_server_logs

    redact_server_logs()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per heartbeat is noise, not news

    try:
        registry_url, owner = check_settings(settings)
    except ConfigError as exc:
        log.error("%s", str(exc).removeprefix("Error: "))
        print(exc, flush=True)
        return EXIT_CONFIG
    key = crypto.load_or_create_key(settings.data_dir / "key")
    agent = NodeAgent(settings, registry_url, owner, key, nvml=gpu.open_nvml(settings.fake_nvml))
    log.info("node key %s (npub %s), registry %s", key.pubkey, key.npub, registry_url)
    async with httpx.AsyncClient(base_url=registry_url, timeout=15) as http:
        try:
            await agent.register(http)
        except RegistrationError as exc:
            log.error("Worker registration failed: %s", exc)
            log.error("Cannot start service without successful registration")
            return EXIT_REGISTRATION
        log.info("Worker registration completed successfully")
        host, port = settings.listen_host_port
        token = settings.delegation_auth_token
        pow_service = PowService(
            key,
            registry_url,
            delegation_url=settings.delegation_url if settings.delegation_mode else None,
            delegation_token=token.get_secret_value() if token and settings.delegation_mode else None,
            poll_s=settings.delegation_poll_sec,
            backoff_max_s=settings.backoff_max_sec,
            device=settings.poc_device,
        )
        if pow_service.delegation_mode:
            log.info("DELEGATION mode: PoC generation goes to %s", pow_service.delegation_url)
        limits = BundleLimits(settings.max_bundle_unpacked_bytes, settings.max_bundle_files)
        worker = TaskWorker(agent, http, settings.data_dir / "tasks", limits)
        collector = NodeCollector(agent.connected.is_set, lambda: worker.queue_len, pow_service.status)
        app = create_health_app(
            key.pubkey,
            local_ip(registry_url),
            agent.read_inventory,
            [*pow_routes(pow_service), metrics_route(collector)],
        )
        server = CleanExitServer(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        agent.on_command = worker.on_command
        agent.queue_source = lambda: worker.queue_len
        stop = asyncio.Event()
        beats = asyncio.create_task(agent.heartbeat_forever(http, stop))
        try:
            await server.serve()  # returns on SIGTERM/SIGINT, after draining
        finally:
            await pow_service.stop()
            await worker.stop_all()  # stopped tasks still report what ran
            stop.set()
            await beats
            await agent.logout(http)
            log.info("node %s stopped", agent.miner_id)
    return 0
