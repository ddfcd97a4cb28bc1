"""Nodes the hub dials: admitted on their user's token, reached at the address they serve on.

Such a node (a HiveMind worker) keeps no socket open to the hub; it serves its own endpoint and says
where. It is admitted as an account-bound node of the user who logged it in (``admit_account_bound``),
and the hub dials only the address the registration came from, or one inside the configured networks,
so no one can make the hub send requests to a third party. The dispatcher gets a sender for it like a
socket's: ``assign`` and ``stop`` become calls through a ``Dialer``, the dialect that speaks the node's
protocol; a call that fails reads as "unreachable", so the task goes back to the queue as for a dead
socket. Its lease is renewed by the same registration sent again without a token, which renews a node
that user registered at that address and can neither create nor change one.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gpupool.core.model import Identity, Principal
from gpupool.core.ports import Clock
from gpupool.errors import Forbidden, GpupoolError, InvalidInput, NotFound
from gpupool.hub.account_bound import AccountBinding
from gpupool.hub.channels import NodeChannels
from gpupool.hub.files import TaskFiles
from gpupool.hub.live import GpuSpec, LiveRegistry, NodeSpec
from gpupool.hub.registry import Registration, RegistryService
from gpupool.hub.tasks import TaskService

log = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One task as a dialed node is sent it."""

    task_id: str
    command: tuple[str, ...]
    env: Mapping[str, str]
    timeout_sec: float
    requirements: Mapping[str, Any]
    # The task's files as a zip, files renamed and added (blocking: call it in a thread).
    zip_with: Callable[[dict[str, bytes], dict[str, str]], bytes] = field(repr=False)


class Dialer(Protocol):
    """The calls a dialed node answers; each raises when the node refuses or cannot be reached."""

    async def execute(self, address: str, dispatch: Dispatch) -> None: ...

    async def stop(self, address: str, task_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class DialedNode:
    """What a node the hub dials declares about itself."""

    name: str  # how it names itself (a HiveMind worker: its user's name)
    host: str  # an IP address
    port: int
    cpu_cores: int = 0
    ram_gb: float = 0.0
    gpu_name: str = ""
    vram_gb: float = 0.0
    region: str | None = None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_networks(cidrs: Sequence[str]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


def dialed_miner_id(username: str, address: str) -> str:
    """One node per user and address: the same worker registering again is the same node."""
    digest = hashlib.sha256(f"{username}\0{address}".encode()).hexdigest()[:12]
    return f"{username[:40]}-{digest}"


class DialOut:
    def __init__(
        self,
        clock: Clock,
        registry: RegistryService,
        live: LiveRegistry,
        channels: NodeChannels,
        tasks: TaskService,
        files: TaskFiles,
        networks: tuple[IpNetwork, ...],
        price_micro_per_ksec: int,
    ) -> None:
        self.clock = clock
        self.registry = registry
        self.live = live
        self.channels = channels
        self.tasks = tasks
        self.files = files
        self.networks = networks
        self.price_micro_per_ksec = price_micro_per_ksec
        self.dialer: Dialer | None = None  # the transport that speaks the nodes' protocol sets it

    async def admit(self, principal: Principal, node: DialedNode, peer_ip: str) -> Registration:
        """Admit ``node`` bound to ``principal``'s account, to be dialed at its host and port."""
        address = self._dialable(node, peer_ip)
        binding = AccountBinding(
            owner=principal.account, identity=Identity.USER_TOKEN, credential=principal.username
        )
        registration = await self.registry.admit_account_bound(binding, self._spec(principal, node, address))
        if registration.status != "pending":
            self._attach(registration.miner_id, address)
        return registration

    async def renew(self, username: str, node: DialedNode, peer_ip: str) -> str:
        """The token-less refresh: renews the lease of the node ``username`` registered at this
        address, from this address; anything else is refused."""
        address = self._dialable(node, peer_ip)
        miner_id = dialed_miner_id(username, address)
        try:
            record = await self.registry.miner(miner_id)
        except NotFound:
            record = None
        if (
            record is None
            or record.identity != Identity.USER_TOKEN.value
            or record.bound_to != username
            or record.spec.get("addr") != address
        ):
            raise NotFound(
                "no node of this user is registered at this address; register it with the user's token",
                code="not_registered",
            )
        if record.status == "pending":
            return miner_id
        now = self.clock.now()
        if miner_id in self.live.nodes:
            self.live.heartbeat(miner_id, now, 0, None)
        else:  # silent past the grace period, or a hub restart: back in the live registry
            self.live.upsert(record, now)
        self._attach(miner_id, address)
        return miner_id

    async def bound_node(self, principal: Principal, task_id: str) -> str:
        """The node ``task_id`` is (or was last) assigned to, when this user's token admitted it."""
        miner_id = self.tasks.holder(task_id) or await self.tasks.last_node(task_id)
        node = self.live.nodes.get(miner_id or "")
        if (
            miner_id is None
            or node is None
            or node.record.identity != Identity.USER_TOKEN.value
            or node.record.bound_to != principal.username
        ):
            raise Forbidden("this task is not assigned to a node of this user", code="not_assigned_node")
        return miner_id

    def _dialable(self, node: DialedNode, peer_ip: str) -> str:
        """The node's address, when the hub may dial it: the caller's own IP, or inside the networks."""
        if not 0 < node.port < 65536:
            raise InvalidInput("port must be 1-65535", field="port")
        try:
            host = _unmapped(ipaddress.ip_address(node.host.strip().strip("[]")))
        except ValueError as exc:
            raise InvalidInput("hostname must be the node's IP address", field="hostname") from exc
        try:
            peer = _unmapped(ipaddress.ip_address(peer_ip))
        except ValueError:
            peer = None
        if host != peer and not any(host in network for network in self.networks):
            raise Forbidden(
                f"the hub dials a node only at the address it registers from ({peer_ip}) or inside "
                "GPUPOOL_HUB_WORKER_DIAL_CIDRS",
                code="dial_address_refused",
            )
        return DialedNode(node.name, str(host), node.port).address

    def _spec(self, principal: Principal, node: DialedNode, address: str) -> NodeSpec:
        gpus = (
            (GpuSpec(index=0, uuid="", name=node.gpu_name, vram_gb=node.vram_gb, compute_capability=""),)
            if node.vram_gb > 0
            else ()
        )
        return NodeSpec(
            pubkey=None,
            owner=principal.account,
            miner_id=dialed_miner_id(principal.username, address),
            cpu_cores=node.cpu_cores,
            ram_gb=node.ram_gb,
            price_micro_per_ksec=self.price_micro_per_ksec,
            max_parallel=1,
            gpus=gpus,
            addr=address,
            proto="dial",
            region=node.region,
        )

    def _attach(self, miner_id: str, address: str) -> None:
        if not self.channels.connected(miner_id):
            self.channels.attach(miner_id, self._sender(miner_id, address))

    def _sender(self, miner_id: str, address: str) -> Callable[[dict[str, Any]], Any]:
        async def send(message: dict[str, Any]) -> None:
            dialer = self.dialer
            if dialer is None:
                raise RuntimeError("no dialer: the hub serves no transport that dials nodes")
            kind = message.get("type")
            if kind == "assign":
                task_id = str(message["task"]["task_id"])
                await dialer.execute(address, self._dispatch(message["task"]))
                try:
                    await self.tasks.node_started(miner_id, task_id)
                except GpupoolError:  # it ended or moved on meanwhile: what happened stands
                    log.info("task %s was not started on %s", task_id, miner_id, exc_info=True)
            elif kind == "stop":
                await dialer.stop(address, str(message["task_id"]))
            # Other commands (price caps, tags) have no call on a dialed node.

        return send

    def _dispatch(self, task: Mapping[str, Any]) -> Dispatch:
        task_id = str(task["task_id"])

        def zip_with(extra: dict[str, bytes], renames: dict[str, str]) -> bytes:
            return self.files.bundle_zip(task_id, extra, renames)

        return Dispatch(
            task_id=task_id,
            command=tuple(task["command"]),
            env=dict(task.get("env") or {}),
            timeout_sec=float(task["timeout_sec"]),
            requirements=self.tasks.requirements_of(task_id),
            zip_with=zip_with,
        )


def _unmapped(address: IpAddress) -> IpAddress:
    """``::ffff:10.0.0.1`` (an IPv4 peer on a dual-stack socket) is ``10.0.0.1``."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
