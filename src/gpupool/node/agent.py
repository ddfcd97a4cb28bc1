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
import secrets
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

from gpupool import crypto, wire
from gpupool.bounds import MAX_NODE_WS_FRAME_BYTES
from gpupool.bundles import BundleLimits
from gpupool.config import NodeSettings
from gpupool.errors import GpupoolError, InvalidInput
from gpupool.node import gpu
from gpupool.node.dstack import fetch_dstack_inventory
from gpupool.node.hub_client import Backoff, HubClient
from gpupool.wire import BATCH_SUBPROTOCOL, MAX_BATCH, envelope

log = logging.getLogger("gpupool.node")

EXIT_REGISTRATION = 1
EXIT_CONFIG = 2
SESSION_REFUSED = {4401, 4403}


class ConfigError(Exception):
    """A required setting is missing or invalid; the message is printed as the seed prints it."""


class RegistrationError(Exception):
    """The registry could not be reached or refused this node."""


class InventoryUnavailable(RegistrationError):
    """The DStack GPU service cannot be read: the agent serves /health (503) and registers later."""


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
    on_command: Callable[[wire.Assign | wire.Stop], None] | None = None
    queue_source: Callable[[], int] | None = None
    # The ids of the tasks this node runs: said on every beat and registration, so a hub that lost
    # track (it restarted, the node re-registered) re-queues what the node no longer runs.
    running_source: Callable[[], list[str]] | None = None
    _socket: ClientConnection | None = None
    _acks: dict[str, asyncio.Future[int | None]] = field(default_factory=dict)
    # Results waiting for the socket, when it batches: those ready in one tick leave in one frame.
    _outbox: list[wire.ResultReport] = field(default_factory=list)
    _flusher: asyncio.Task[None] | None = None
    _registering: asyncio.Lock = field(default_factory=asyncio.Lock)
    _signed_at: int = 0

    # -- inventory ------------------------------------------------------------------------------------
    def read_inventory(self) -> gpu.Inventory:
        if self.settings.dstack_url:
            return fetch_dstack_inventory(self.settings.dstack_url)
        return gpu.read_inventory(self.nvml)

    def heartbeat_body(self) -> wire.Heartbeat:
        telemetry = [] if self.settings.dstack_url else gpu.read_telemetry(self.nvml)
        return wire.Heartbeat(
            ts=time.time(),
            queue_len=self.queue_source() if self.queue_source else self.queue_len,
            gpus=[t for g in gpu.heartbeat_gpus(telemetry) if (t := _reading(g)) is not None],
            mem_free_gb=gpu.mem_free_gb(telemetry),
            running_task_ids=self.running_task_ids(),
        )

    def running_task_ids(self) -> list[str]:
        return self.running_source()[: wire.MAX_RUNNING] if self.running_source else []

    # -- registration ---------------------------------------------------------------------------------
    def attach(self, hub: HubClient) -> None:
        """Make ``hub`` send this agent's session token, and register again when the hub refuses it."""
        hub.token = lambda: self.session_token
        hub.reauthenticate = lambda: self.register_again(hub)

    async def register_again(self, hub: HubClient) -> None:
        """After a 401: one registration however many requests were refused together."""
        refused = self.session_token
        async with self._registering:
            if self.session_token == refused:
                await self.register(hub)
                log.info("Worker registration completed successfully (re-registered as %s)", self.miner_id)

    async def register(self, hub: HubClient) -> None:
        """``/permissions`` → ``/workers`` when unknown → ``/v1/miners/register``; RegistrationError else."""
        try:
            inventory = await asyncio.to_thread(self.read_inventory)
        except GpupoolError as exc:
            if self.settings.dstack_url:
                raise InventoryUnavailable(str(exc)) from exc
            raise RegistrationError(str(exc)) from exc
        try:
            perms = await self._call(hub, "GET", f"/permissions/{self.key.pubkey}")
            if not perms.get("registered") or perms.get("write", {}).get("mode") != "AllowAll":
                worker = {
                    "pubkey": self.key.pubkey,
                    "owner": self.owner,
                    "node_type": self.settings.node_type,
                }
                await self._call(hub, "POST", "/workers", self._signed(worker))
            out = await self._call(hub, "POST", "/v1/miners/register", self._signed(self._spec(inventory)))
            registered = wire.decode(wire.Registered, out)
        except (httpx.HTTPError, GpupoolError, OSError) as exc:
            raise RegistrationError(str(exc) or repr(exc)) from exc
        self.miner_id, self.session_token = registered.miner_id, registered.session_token
        self.heartbeat_s = registered.next_heartbeat_sec

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
            "price_micro_per_ksec": s.price_micro_per_ksec,
            "max_parallel": s.max_parallel,
            "region": s.region,
            "tags": s.tags,
            "capabilities": s.capabilities,
            "running_task_ids": self.running_task_ids(),
        }
        if s.miner_id:
            body["miner_id"] = s.miner_id
        return body

    def _signed(self, body: dict[str, Any]) -> dict[str, Any]:
        # A second within the same clock second would be the same event, refused as a replay: a
        # registration again right after a 401 must differ from the one it replaces, and so must the
        # first one of an agent restarted within the second it was killed in (a nonce tag).
        self._signed_at = max(int(time.time()), self._signed_at + 1)
        nonce = [["nonce", secrets.token_hex(8)]]
        return crypto.sign_body(
            self.key, crypto.KIND_REGISTRATION, body, created_at=self._signed_at, tags=nonce
        )

    async def _call(
        self, hub: HubClient, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        # One try: at start-up a refusal ends the process (the seed's behaviour); later the heartbeat
        # loop retries registration with its own backoff.
        resp = await hub.request(method, path, json=body, attempts=1, reauthenticate=False)
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
    async def heartbeat_forever(
        self, hub: HubClient, stop: asyncio.Event, *, registered: bool = True
    ) -> None:
        """Keep a heartbeat socket open; reconnect with backoff, register again when refused (or first,
        when the start could not: DStack unreachable)."""
        backoff = Backoff(max_s=self.settings.backoff_max_sec)
        must_register = not registered
        while not stop.is_set():
            try:
                if must_register:
                    await self.register_again(hub)
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
            beat = await asyncio.to_thread(self.heartbeat_body)
            await ws.send(json.dumps(wire.encode(beat)))
            deadline = time.monotonic() + self.heartbeat_s
            while (left := deadline - time.monotonic()) > 0 and not stop.is_set():
                try:
                    frame = await asyncio.wait_for(ws.recv(), min(left, 0.5))
                    messages = wire.decode_hub_frame(frame)
                except TimeoutError:
                    continue
                except (ValueError, RecursionError, InvalidInput) as exc:  # RecursionError: nested too deep
                    log.warning("the hub sent a frame this node cannot read (%s); ignored", exc)
                    continue
                for message in messages:
                    self._take(message, backoff)

    def _take(self, message: wire.HubMessage, backoff: Backoff) -> None:
        """One message from the hub: an ack of a beat or of a result, or a command."""
        if isinstance(message, wire.Ack):
            self.connected.set()
            backoff.reset()
            self.heartbeat_s = message.next_heartbeat_sec
        elif isinstance(message, wire.ResultAck):
            pending = self._acks.get(str(message.task_id))
            if pending is not None and not pending.done():
                pending.set_result(message.status)
        elif isinstance(message, wire.Error):
            log.warning("the hub could not read a message: %s (%s)", message.message, message.code)
        elif self.on_command is not None and isinstance(message, wire.Assign | wire.Stop):
            self.on_command(message)

    async def report(self, task_id: str, signed: dict[str, Any], timeout_s: float = 10.0) -> int | None:
        """Send a signed result on the heartbeat socket: the status the hub answered with (as HTTP
        would), or None when there is no socket or no answer came (the caller then uses HTTP)."""
        ws = self._socket
        if ws is None:
            return None
        pending = self._acks[task_id] = asyncio.get_running_loop().create_future()
        message = wire.ResultReport(result=signed)
        try:
            if ws.subprotocol == BATCH_SUBPROTOCOL:
                self._outbox.append(message)
                if self._flusher is None:
                    self._flusher = asyncio.create_task(self._flush())
            else:
                await ws.send(json.dumps(wire.encode(message)))
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

    async def logout(self, hub: HubClient) -> None:
        if self.session_token is None:
            return
        body = {"session_token": self.session_token}
        with contextlib.suppress(httpx.HTTPError):
            await hub.request(
                "POST", "/v1/miners/logout", json=body, attempts=1, timeout_s=3, reauthenticate=False
            )


def _reading(values: dict[str, Any]) -> wire.GpuTelemetry | None:
    """One GPU's readings for a beat; a reading out of any sane range (a sensor glitch) is left out."""
    try:
        return wire.decode(wire.GpuTelemetry, values)
    except InvalidInput as exc:
        log.debug("GPU %s: reading left out of the heartbeat: %s", values.get("index"), exc)
        return None


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
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    async with HubClient(registry_url, backoff_max_s=settings.backoff_max_sec, api_key=api_key) as hub:
        agent.attach(hub)
        registered = True
        try:
            await agent.register(hub)
            log.info("Worker registration completed successfully")
        except InventoryUnavailable as exc:
            # As the DStack backend does: start anyway, answer 503 "Error: …", register on recovery.
            log.error("DStack GPU service unavailable at start: %s", exc)
            log.error("Serving /health as Unavailable; registering once DStack recovers")
            registered = False
        except RegistrationError as exc:
            log.error("Worker registration failed: %s", exc)
            log.error("Cannot start service without successful registration")
            return EXIT_REGISTRATION
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
            serve_foreign=settings.mlnode_api,
        )
        if settings.mlnode_api:
            log.info(
                "MLNode API on: PoC for other keys, callers from %s", ",".join(settings.mlnode_allow_cidrs)
            )
        if pow_service.delegation_mode:
            log.info("DELEGATION mode: PoC generation goes to %s", pow_service.delegation_url)
        limits = BundleLimits(settings.max_bundle_unpacked_bytes, settings.max_bundle_files)
        worker = TaskWorker(agent, hub, settings.data_dir / "tasks", limits)
        collector = NodeCollector(agent.connected.is_set, lambda: worker.queue_len, pow_service.status)
        app = create_health_app(
            key.pubkey,
            local_ip(registry_url),
            agent.read_inventory,
            [*pow_routes(pow_service, settings.mlnode_allow_cidrs), metrics_route(collector)],
        )
        server = CleanExitServer(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        agent.on_command = worker.on_command
        agent.queue_source = lambda: worker.queue_len
        agent.running_source = lambda: list(worker.running)
        stop = asyncio.Event()
        beats = asyncio.create_task(agent.heartbeat_forever(hub, stop, registered=registered))
        try:
            await server.serve()  # returns on SIGTERM/SIGINT, after draining
        finally:
            await pow_service.stop()
            await worker.stop_all()  # stopped tasks still report what ran
            stop.set()
            await beats
            await agent.logout(hub)
            log.info("node %s stopped", agent.miner_id)
    return 0
