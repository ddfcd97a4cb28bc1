"""The heartbeat socket's batch extension; it lives in ``gpupool.wire`` with the rest of the contract."""

from __future__ import annotations

from gpupool.wire.codec import BATCH_SUBPROTOCOL, envelope, opened
from gpupool.wire.messages import MAX_BATCH

__all__ = ["BATCH_SUBPROTOCOL", "MAX_BATCH", "envelope", "opened"]
