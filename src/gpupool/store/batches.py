"""Group commit: many callers' writes of one kind in one transaction.

Under load a transaction per caller costs a commit (an fsync on SQLite) and a round of statements
each; a batch pays one commit and a few multi-row statements for everyone waiting. Idle, a caller
waits for no one: the first item starts a batch at once, and whatever arrives while it runs forms
the next one.

The batch function answers each item with its result or with its own exception (and must have
written nothing for an item it answers with an exception). When the transaction itself fails (a
CHECK refusing an overdraft, a unique key taken by another replica), the batch is run again one item
at a time, so each caller gets the answer a transaction of its own would have given. That lets the
batch function be optimistic: it may assume what usually holds (nothing settled twice, no replay)
and leave the database's constraints to refuse the rare batch where it did not; ``alone`` is then
the careful function that writes one item after looking.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from gpupool.store.db import Database

I = TypeVar("I")  # noqa: E741 - the item, as in the type's signature
R = TypeVar("R")

BatchFn = Callable[[AsyncConnection, Sequence[I]], Awaitable[list[R | Exception]]]


class WriteBatcher(Generic[I, R]):
    def __init__(
        self, db: Database, apply: BatchFn[I, R], *, alone: BatchFn[I, R] | None = None, max_batch: int = 500
    ) -> None:
        self.db = db
        self.apply = apply
        self.alone = alone or apply
        self.max_batch = max_batch
        self._pending: list[tuple[I, asyncio.Future[R]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self.batches = 0  # how many transactions served how many items: the batching at work
        self.items = 0

    async def submit(self, item: I) -> R:
        """``item``'s answer, once the transaction that wrote it has committed."""
        return await self._enqueue(item)

    async def submit_many(self, items: Sequence[I]) -> list[R | BaseException]:
        """Each item's answer (a result or its exception), written in as few transactions as fit."""
        futures = [self._enqueue(item) for item in items]
        return await asyncio.gather(*futures, return_exceptions=True)  # futures: no task per item

    def _enqueue(self, item: I) -> asyncio.Future[R]:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())
        return future

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # callers woken in this same tick join the first batch
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                await self._run(batch)
        finally:
            self._drainer = None

    async def _run(self, batch: list[tuple[I, asyncio.Future[R]]], *, retry: bool = False) -> None:
        items = [item for item, _ in batch]
        apply = self.alone if retry else self.apply
        try:
            answers = await self.db.run(lambda conn: apply(conn, items))
        except Exception as exc:
            if not retry and (len(batch) > 1 or self.alone is not self.apply):
                for one in batch:
                    await self._run([one], retry=True)
                return
            answers = [exc]
        except BaseException as exc:  # cancelled (shutdown): nobody is left waiting forever
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            raise
        self.batches += 1
        self.items += len(batch)
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():  # its caller went away; the write stands, like any committed one
                continue
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)
