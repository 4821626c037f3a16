"""Group commit: small writes of one process that arrive together share one statement.

While a flush is in flight, requests queue; the next flush takes them all (up to a size cap)
and sends them as one statement, which commits by itself. Each caller is answered only after
the flush that carried its write returned (so after its commit), with its own result. A flush
that fails answers each of its callers with :class:`GroupFailed`; the caller then runs its own
write alone, on the usual path, so one bad write never fails another and each error is the
one the caller would have had alone. The writes grouped this way must be idempotent (a
metric point is: the same point again is a no-op), since a flush cut by a lost connection
may or may not have committed before its callers retry alone.

The flush runs in its own task, not in a caller's: a caller that goes away (a client that
disconnects) does not cancel the others' write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupFailed(Exception):
    """The flush that carried this write failed: nothing is known of it; write it alone."""


class GroupCommit(Generic[Item, Result]):
    """Queue items; one task flushes them in groups, answering each item's caller."""

    def __init__(
        self,
        flush: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        weight: Callable[[Item], int],
        max_weight: int,
        max_in_flight: int = 1,
    ) -> None:
        """``flush(items)`` returns one result per item, in order. A group holds items up to
        ``max_weight`` in total (at least one item, whatever its weight); at most
        ``max_in_flight`` flushes run at once."""
        self._flush = flush
        self._weight = weight
        self._max_weight = max_weight
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()
        # Flushes sent and items carried (for tests and benchmarks).
        self.flushes = 0
        self.items = 0

    async def submit(self, item: Item) -> Result:
        """``item``'s result, once the flush that carried it returned; raises
        :class:`GroupFailed` if that flush failed."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if len(self._tasks) < self._max_in_flight:
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            # Also when cancelled before it ran (its finally then never runs).
            task.add_done_callback(self._tasks.discard)
        return await future

    async def alone(self, item: Item) -> Result:
        """``item`` flushed by itself, now, in the caller's task (a write large enough that
        sharing its statement saves little, and waiting for a flush in flight costs more):
        the same flush, the same :class:`GroupFailed` on failure."""
        self.flushes += 1
        self.items += 1
        try:
            results = list(await self._flush([item]))
        except Exception as exc:
            raise GroupFailed(repr(exc)) from exc
        return results[0]

    def _next_group(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        total = 0
        taken = 0
        for item, _future in self._pending:
            total += self._weight(item)
            if taken and total > self._max_weight:
                break
            taken += 1
        group, self._pending = self._pending[:taken], self._pending[taken:]
        return group

    async def _drain(self) -> None:
        try:
            while self._pending:
                group = self._next_group()
                # A caller that went away (its future cancelled) is dropped before the flush.
                group = [(item, future) for item, future in group if not future.done()]
                if not group:
                    continue
                self.flushes += 1
                self.items += len(group)
                try:
                    results = list(await self._flush([item for item, _ in group]))
                    if len(results) != len(group):
                        raise RuntimeError(f"{len(results)} results for {len(group)} writes")
                except Exception as exc:
                    for _, future in group:
                        if not future.done():
                            future.set_exception(GroupFailed(repr(exc)))
                    continue
                except BaseException:
                    # Cancelled (the loop is closing): the callers learn it, then stop.
                    for _, future in group:
                        if not future.done():
                            future.set_exception(GroupFailed("cancelled"))
                    raise
                for (_, future), result in zip(group, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            # Synchronously with the loop's last look at the queue: a write queued after it
            # starts a new flush task.
            self._tasks.discard(asyncio.current_task())
            if not self._tasks:
                for _, future in self._pending:
                    if not future.done():
                        future.set_exception(GroupFailed("stopped"))
                self._pending = []
