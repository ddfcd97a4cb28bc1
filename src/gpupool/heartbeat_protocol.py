"""The heartbeat socket's batch extension, shared by hub and node.

SPEC §3.2 sends one message per command and per result. At a thousand tasks a second that is three
WebSocket frames per task, each parsed, dispatched and answered on its own, and they cost the hub more
than the settlement does. A node that offers the ``gpupool.batch.v1`` subprotocol when it opens the
socket, and a hub that accepts it, may wrap several messages in one envelope:

    {"type": "batch", "messages": [<message>, <message>, ...]}

Every message inside keeps the shape SPEC §3.2 gives it (``assign``, ``stop``, ``result``,
``result_ack``), and a peer answers an envelope of results with an envelope of acknowledgements. A node
or hub that does not offer or accept the subprotocol never sees an envelope, so both sides stay
compatible with the plain protocol.
"""

from __future__ import annotations

from typing import Any

BATCH_SUBPROTOCOL = "gpupool.batch.v1"
MAX_BATCH = 1000  # messages in one envelope: a bound on what one frame asks of its reader


def envelope(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """One message standing for ``messages``: the message itself when there is one."""
    return messages[0] if len(messages) == 1 else {"type": "batch", "messages": messages}


def opened(message: Any) -> list[Any]:
    """The messages one received frame holds: an envelope's contents, or the frame itself."""
    if isinstance(message, dict) and message.get("type") == "batch":
        inner = message.get("messages")
        if not isinstance(inner, list) or len(inner) > MAX_BATCH:
            raise ValueError(f"a batch holds a list of at most {MAX_BATCH} messages")
        return inner
    return [message]
