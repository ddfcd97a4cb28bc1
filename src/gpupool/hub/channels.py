"""Commands to nodes over their heartbeat sockets: ``assign``, ``stop`` (SPEC §3.2).

The WebSocket handler attaches a sender when a node's socket opens and detaches it when it closes; a
service pushes by miner id and learns at once whether the node was reachable. A node whose socket
speaks the batch extension (``gpupool.wire``) gets several commands in one frame.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gpupool.wire import MAX_BATCH, HubMessage, envelope

log = logging.getLogger(__name__)
Sender = Callable[[dict[str, Any]], Awaitable[None]]


class NodeChannels:
    def __init__(self) -> None:
        self._senders: dict[str, tuple[Sender, bool]] = {}

    def attach(self, miner_id: str, sender: Sender, *, batching: bool = False) -> None:
        self._senders[miner_id] = (sender, batching)

    def detach(self, miner_id: str, sender: Sender) -> None:
        attached = self._senders.get(miner_id)
        if attached is not None and attached[0] is sender:
            del self._senders[miner_id]

    def connected(self, miner_id: str) -> bool:
        return miner_id in self._senders

    async def send(self, miner_id: str, message: HubMessage) -> bool:
        """True when the message was written to the node's socket."""
        return await self.send_many(miner_id, [message]) == 1

    async def send_many(self, miner_id: str, messages: Sequence[HubMessage]) -> int:
        """How many of ``messages``, in order, were written: in envelopes where the node batches."""
        attached = self._senders.get(miner_id)
        if attached is None:
            return 0
        sender, batching = attached
        size = MAX_BATCH if batching else 1
        written = 0
        try:
            for start in range(0, len(messages), size):
                chunk = messages[start : start + size]
                await sender(envelope(chunk))
                written += len(chunk)
        except Exception:  # the socket died under us: the node is not reachable now
            log.info("push to %s failed; treating it as unreachable", miner_id, exc_info=True)
            if self._senders.get(miner_id) is attached:
                del self._senders[miner_id]
        return written
