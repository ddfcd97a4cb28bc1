"""Commands to nodes over their heartbeat sockets: ``assign``, ``stop`` (SPEC §3.2).

The WebSocket handler attaches a sender when a node's socket opens and detaches it when it closes; a
service pushes by miner id and learns at once whether the node was reachable.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)
Sender = Callable[[dict[str, Any]], Awaitable[None]]


class NodeChannels:
    def __init__(self) -> None:
        self._senders: dict[str, Sender] = {}

    def attach(self, miner_id: str, sender: Sender) -> None:
        self._senders[miner_id] = sender

    def detach(self, miner_id: str, sender: Sender) -> None:
        if self._senders.get(miner_id) is sender:
            del self._senders[miner_id]

    def connected(self, miner_id: str) -> bool:
        return miner_id in self._senders

    async def send(self, miner_id: str, message: dict[str, Any]) -> bool:
        """True when the message was written to the node's socket."""
        sender = self._senders.get(miner_id)
        if sender is None:
            return False
        try:
            await sender(message)
        except Exception:  # the socket died under us: the node is not reachable now
            log.info("push to %s failed; treating it as unreachable", miner_id, exc_info=True)
            self._senders.pop(miner_id, None)
            return False
        return True
