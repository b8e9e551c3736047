"""Group commit: requests that arrive while a batch is being written go together in the next.

A drop admits hundreds of reservations a second, each a small transaction on the same few item
rows; one transaction per reservation spends its time in round trips and row-lock waits, not in
work. :class:`GroupCommit` lets callers await their own result while a few writer tasks each
take everything queued (up to ``max_batch``) and write it at once. Nothing waits for a batch to
fill: at low load a batch is one request and costs what it did before.

No library here does this for asyncio (aiostream and friends batch iterators, not awaitable
submissions), and the core is a queue and a future per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel import tracing
from snapshoe.kernel.db import Sessions

log = logging.getLogger("snapshoe.batching")

BATCH_SIZE = Histogram(
    "snapshoe_group_commit_batch_size",
    "Items written together by one group-commit batch",
    ["name"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)

T = TypeVar("T")
R = TypeVar("R")

# Writes a batch; returns one result or exception per item, in order. Raising fails them all.
BatchWriter = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class OutcomeUnknown(Exception):
    """A commit failed on its way and nobody can tell whether it landed. Whoever gets this
    must not undo anything the write depends on (a reservation, a gate admission): the rows
    may exist. Answer a retryable error and leave the rest to expiry and the sweepers."""


# Test seam (never set outside tests): writer name -> a callable run at ``stage``
# ("commit": just before the COMMIT, so raising rolls back; "committed": the COMMIT has just
# returned; "landed": before looking whether a lost commit landed). Raising there is what a
# connection lost at that moment looks like to the writer, while the database state is real.
FAULTS: dict[str, Callable[[str], None]] = {}


def fault(name: str, stage: str) -> None:
    hook = FAULTS.get(name)
    if hook is not None:
        hook(stage)


async def look(name: str, landed: Callable[[], Awaitable[bool]]) -> bool:
    """Whether a commit that failed on its way landed; :class:`OutcomeUnknown` if that
    cannot be told either."""
    try:
        fault(name, "landed")
        return await landed()
    except Exception as exc:
        raise OutcomeUnknown(f"{name}: commit outcome unknown ({exc!r})") from exc


class GroupCommit(Generic[T, R]):
    def __init__(
        self, name: str, write: BatchWriter[T, R], *, writers: int, max_batch: int
    ) -> None:
        if writers < 1 or max_batch < 1:
            raise ValueError("writers and max_batch must be at least 1")
        self._sizes = BATCH_SIZE.labels(name)
        self._write = write
        self._writers = writers
        self._max_batch = max_batch
        self._name = name
        # (item, its caller's future, its caller's span context when tracing)
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R], Any]] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the writers on the running loop (called from a lifespan, never at import)."""
        if self._tasks:
            return
        self._queue = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self._writers)]

    async def close(self) -> None:
        """Stop the writers. A batch being written is cancelled with them; whatever is still
        queued is failed, so no caller waits forever."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        queue, self._queue = self._queue, None
        while queue is not None and not queue.empty():
            _, fut, _ = queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("group commit closed"))

    async def submit(self, item: T) -> R:
        """Queue ``item`` for the next batch and wait for its own result. A caller that is
        cancelled stops waiting; its item is still written (it may already be)."""
        if self._queue is None:
            raise RuntimeError("group commit not started")
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, fut, tracing.current_span_context()))
        return await fut

    async def _run(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            batch = [await queue.get()]
            while len(batch) < self._max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            items = [item for item, _, _ in batch]
            results: Sequence[R | BaseException]
            try:
                with tracing.batch_span(f"group commit {self._name}", [c for _, _, c in batch]):
                    results = await self._write(items)
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
            except asyncio.CancelledError:
                for _, fut, _ in batch:
                    if not fut.done():
                        fut.cancel()
                raise
            except Exception as exc:  # handed to every caller of the batch
                results = [exc] * len(batch)
            self._sizes.observe(len(batch))
            for (_, fut, _), result in zip(batch, results, strict=True):
                if fut.done():  # its caller was cancelled
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)


async def together_or_alone(
    sessions: Sessions,
    batch: list[T],
    *,
    write: Callable[[AsyncSession, list[T]], Awaitable[Sequence[R | BaseException]]],
    landed: Callable[[Sequence[R | BaseException]], Awaitable[bool]],
    alone: Callable[[T], Awaitable[R]],
    fallbacks: Counter,
    name: str = "batch",
) -> list[R | BaseException]:
    """The batch writers' rule (products' ledger, orders' new orders). ``write`` puts the
    whole batch in one transaction and returns each item's result. If the transaction fails,
    every item is written ``alone``, one after the other (a fallback is rare, and concurrent
    single writes would fight for the same rows), so a bad item costs its batch time, never
    another caller's result. A failure at the commit itself may have landed: ``landed``, given
    what ``write`` returned, looks before anything is written twice; if it cannot tell, every
    caller gets :class:`OutcomeUnknown` (nothing may be undone). A batch of one is written
    alone at once (``alone`` then owns the same rule for its own commit)."""
    if len(batch) > 1:
        prepared: Sequence[R | BaseException] = []
        committing = False
        try:
            async with sessions.begin() as session:
                prepared = await write(session, batch)
                committing = True  # the commit is next: from here a failure may have landed
                fault(name, "commit")
            fault(name, "committed")
            return list(prepared)
        except Exception as exc:
            if committing and await look(name, lambda: landed(prepared)):
                return list(prepared)
            fallbacks.inc()
            log.info("batch of %d refused (%r); writing them one by one", len(batch), exc)
    results: list[R | BaseException] = []
    for item in batch:
        try:
            results.append(await alone(item))
        except Exception as exc:
            results.append(exc)
    return results
