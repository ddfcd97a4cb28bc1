"""One way in and one way out for every hub↔node message.

``decode`` validates (types, ranges, lengths) and answers a typed message or raises ``InvalidInput``
naming the first bad field (``usage.gpu_seconds``), which every transport maps once: HTTP 422 with
``details.field``, a gRPC INVALID_ARGUMENT, an ``error`` frame on the socket. ``encode`` gives the
JSON-ready dict a peer reads, absent figures left out.

The batch extension (subprotocol ``gpupool.batch.v1``): a peer that offered it when the socket opened
may wrap several messages in ``{"type": "batch", "messages": [...]}``; every message inside keeps its
own shape, and an envelope of results is answered by an envelope of acknowledgements.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import ValidationError

from gpupool.errors import InvalidInput
from gpupool.wire.messages import (
    MAX_BATCH,
    Ack,
    Assign,
    Batch,
    Error,
    Heartbeat,
    HubMessage,
    Message,
    NodeMessage,
    ResultAck,
    ResultReport,
    Stop,
)

BATCH_SUBPROTOCOL = "gpupool.batch.v1"
M = TypeVar("M", bound=Message)

_HUB_KINDS: dict[str, type[HubMessage]] = {
    "assign": Assign,
    "stop": Stop,
    "ack": Ack,
    "result_ack": ResultAck,
    "error": Error,
}


def decode(kind: type[M], data: Mapping[str, Any] | str | bytes, *, field: str = "") -> M:
    """``data`` (a dict, or JSON text) as a ``kind``; InvalidInput naming the first bad field else.

    ``field`` prefixes the name, for a message nested in another (``result``)."""
    try:
        if isinstance(data, str | bytes):
            return kind.model_validate_json(data)
        return kind.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in (field, *first["loc"]) if part != "") or field or "body"
        raise InvalidInput(f"{name}: {first['msg']}", field=name) from exc


def encode(message: Message) -> dict[str, Any]:
    """The message as its peer reads it: JSON types only, absent (None) fields left out."""
    return message.model_dump(mode="json", exclude_none=True)


def envelope(messages: Sequence[Message | Mapping[str, Any]]) -> dict[str, Any]:
    """One frame standing for ``messages``: the message itself when there is one."""
    plain = [encode(m) if isinstance(m, Message) else dict(m) for m in messages]
    return plain[0] if len(plain) == 1 else {"type": "batch", "messages": plain}


def opened(message: Any) -> list[Any]:
    """The messages one received frame holds: an envelope's contents, or the frame itself."""
    if isinstance(message, dict) and message.get("type") == "batch":
        inner = message.get("messages")
        if not isinstance(inner, list) or len(inner) > MAX_BATCH:
            raise ValueError(f"a batch holds a list of at most {MAX_BATCH} messages")
        return inner
    return [message]


def decode_hub_frame(text: str | bytes) -> list[HubMessage]:
    """What a node reads off its socket: the hub's messages in one frame, each typed.

    A message of a kind this node does not know is skipped (a newer hub); a malformed one raises."""
    frame = json.loads(text)
    if isinstance(frame, dict) and frame.get("type") == "batch":
        frame = decode(Batch, frame).messages
    out: list[HubMessage] = []
    for item in frame if isinstance(frame, list) else [frame]:
        kind = _HUB_KINDS.get(str(item.get("type"))) if isinstance(item, dict) else None
        if kind is not None:
            out.append(decode(kind, item))
    return out


def decode_node_message(message: Any) -> NodeMessage:
    """One message a node sent on its socket: a signed result, or (no ``type``) a heartbeat."""
    if isinstance(message, dict) and message.get("type") == "result":
        return decode(ResultReport, message)
    return decode(Heartbeat, message)
