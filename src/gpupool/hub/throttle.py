"""Request budgets on top of the ``limits`` library: in memory on one hub, in Redis across replicas."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from gpupool.errors import RateLimited


def make_storage(redis_url: str | None) -> Storage:
    """Shared Redis storage when several replicas serve one pool, process memory otherwise."""
    if redis_url:
        scheme = redis_url.replace("redis://", "async+redis://", 1).replace("rediss://", "async+rediss://", 1)
        storage = storage_from_string(scheme, implementation="redispy")  # redis-py, not coredis
        assert isinstance(storage, Storage)
        return storage
    return MemoryStorage()


class Budget:
    """One named budget (``"50/second"``) per key; ``hit`` raises RateLimited with a Retry-After."""

    def __init__(self, storage: Storage, name: str, limit: str) -> None:
        self.name = name
        self.item: RateLimitItem = parse(limit)
        self._limiter = MovingWindowRateLimiter(storage)

    async def hit(self, key: str, message: str = "too many requests") -> None:
        if not await self._limiter.hit(self.item, self.name, key):
            raise RateLimited(message, retry_after_s=await self.retry_after(key))

    async def check(self, key: str, message: str = "too many requests") -> None:
        """Raise when ``key`` has no budget left, without spending any."""
        if not await self._limiter.test(self.item, self.name, key):
            raise RateLimited(message, retry_after_s=await self.retry_after(key))

    async def retry_after(self, key: str) -> int:
        stats = await self._limiter.get_window_stats(self.item, self.name, key)
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def clear(self, key: str) -> None:
        await self._limiter.clear(self.item, self.name, key)
