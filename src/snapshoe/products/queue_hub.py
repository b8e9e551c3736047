"""The waiting room's live updates: one Redis pub/sub subscription per products process (not one
per open stream), fanned out to the streams open here.

Whoever changes tickets (the outflow, a used admission) publishes a small message on the
namespace's queue channel after its transaction commits. Its keys, any of which may be present:
``head`` (every waiting position moved: the latest place admitted), ``t`` (those ticket ids
changed state), ``all`` (every ticket may have changed: the release ranked them) and ``ended``
(the queue ended: every ticket still waiting, which is every place past ``head``, is sold out).

What a crowd costs is bounded per message, not per stream: only a ticket's own change wakes its
stream at once, with a read of that ticket; a head move wakes nobody: the hub keeps the latest
head, and each stream sends its new position (place - head, no read) when it wakes for its next
heartbeat, so positions are at most HEARTBEAT_SECONDS old at no cost per move; an end tells every
stream its fate without a read; ``all`` is one read of the product's tickets in this process
(``reader``), handed to the streams whose ticket it shows changed. Wakes of a crowd are spread
(FRAMES_PER_SECOND), since each writes a frame. A lost message costs a stream at most
REFRESH_SECONDS: each process reads its products' tickets that often for its streams, as for
``all`` (one read per process, where a re-read per stream cost 220 reads a second at 20,000
streams in bench queue and starved the streams' own opening). The database stays the truth,
and a resubscription after a Redis outage hands everyone a fresh row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("snapshoe.products.queue")

RECONNECT_SECONDS = 1.0
# A crowd's frames after a release or an end, per process: 10,000 streams in 2 s rather than a
# burst in front of the reserve path that runs in the same processes.
FRAMES_PER_SECOND = 5000.0
# Without that read (the database was away), each stream reads its own ticket, at this pace.
FALLBACK_READS_PER_SECOND = 500.0
# The end's wakes of a crowd (a frame and a close each): at least this many a second.
MIN_WAKES_PER_SECOND = 1000.0
SPREAD_STEP_SECONDS = 0.1
# How old a lost update can get: each process reads its products' tickets for its streams
# this often (spread at random, so that processes do not read together).
REFRESH_SECONDS = 60.0


def told_key(row: Mapping[Any, Any]) -> tuple[Any, ...]:
    """What of a ticket's row a stream tells (with the head): the same key, nothing new."""
    return row.get("state"), row.get("place"), row.get("admitted_until")


def channel(namespace: str) -> str:
    return f"{namespace}:queue:events"


async def publish(redis: Redis, namespace: str, message: dict[str, Any]) -> None:
    """Tell every process; a failure only delays the streams until their re-read."""
    try:
        await redis.publish(channel(namespace), orjson.dumps(message))
    except RedisError as exc:
        log.warning("queue update not published: %s", exc)


@dataclass(eq=False)
class Listener:
    """One open stream: woken when its product's queue or its ticket changed."""

    product_id: str
    ticket_id: str
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    reread: bool = False  # the ticket (may have) changed: read it again
    row: Mapping[Any, Any] | None = None  # a fresh row the hub read for everyone
    ended_after: int | None = None  # the queue ended: a waiting place past this is sold out
    known: tuple[Any, ...] | None = None  # told_key of the row the stream last told


@dataclass
class QueueHub:
    redis: Redis
    namespace: str
    listeners: dict[str, set[Listener]] = field(default_factory=dict)  # product -> streams
    by_ticket: dict[str, set[Listener]] = field(default_factory=dict)
    heads: dict[str, int] = field(default_factory=dict)  # product -> the latest head told
    task: asyncio.Task[None] | None = None
    # product id -> {ticket id: row}: the product's tickets, read once for every stream here
    reader: Callable[[str], Awaitable[Mapping[str, Mapping[Any, Any]]]] | None = None
    reads: set[asyncio.Task[None]] = field(default_factory=set)
    refresh_at: dict[str, float] = field(default_factory=dict)  # product -> loop time

    @property
    def open_streams(self) -> int:
        return sum(len(s) for s in self.listeners.values())

    @contextlib.contextmanager
    def listen(self, product_id: str, ticket_id: str) -> Iterator[Listener]:
        self._ensure_started()
        listener = Listener(product_id, ticket_id)
        self.listeners.setdefault(product_id, set()).add(listener)
        self.by_ticket.setdefault(ticket_id, set()).add(listener)
        try:
            yield listener
        finally:
            for index, key in ((self.listeners, product_id), (self.by_ticket, ticket_id)):
                group = index.get(key)
                if group is not None:
                    group.discard(listener)
                    if not group:
                        del index[key]

    def _ensure_started(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="queue-hub")

    async def aclose(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await self.task

    def head(self, product_id: str) -> int:
        return self.heads.get(product_id, 0)

    def dispatch(self, message: dict[str, Any]) -> None:
        pid = str(message.get("p", ""))
        if "head" in message:
            self.heads[pid] = max(self.head(pid), int(message["head"]))
        tickets = {str(t) for t in message.get("t") or ()}
        if message.get("all"):
            crowd = list(self.listeners.get(pid, ()))
            # The read for everyone carries the changed tickets too: they go first.
            first = [listener for listener in crowd if listener.ticket_id in tickets]
            rest = [listener for listener in crowd if listener.ticket_id not in tickets]
            self._read_for(pid, first + rest, fallback=True)
            return
        for listener in [x for t in tickets for x in self.by_ticket.get(t, ())]:
            listener.reread = True
            listener.woken.set()
        if message.get("ended"):
            crowd = list(self.listeners.get(pid, ()))
            for listener in crowd:
                listener.ended_after = self.head(pid)
            self._wake_spread(crowd, max(MIN_WAKES_PER_SECOND, len(crowd) / 2), reread=False)

    def refresh(self, now: float) -> None:
        """The periodic read for the streams here, of each product whose turn it is."""
        for pid in list(self.listeners):
            due = self.refresh_at.setdefault(pid, now + REFRESH_SECONDS * random.random())  # noqa: S311
            if now >= due:
                self.refresh_at[pid] = now + REFRESH_SECONDS * random.uniform(0.75, 1.25)  # noqa: S311
                self._read_for(pid, list(self.listeners[pid]), fallback=False)
        for pid in [p for p in self.refresh_at if p not in self.listeners]:
            del self.refresh_at[pid]

    def _read_for(self, pid: str, crowd: list[Listener], *, fallback: bool) -> None:
        task = asyncio.create_task(self._hand_out(pid, crowd, fallback=fallback))
        self.reads.add(task)
        task.add_done_callback(self.reads.discard)

    async def _hand_out(self, pid: str, crowd: list[Listener], *, fallback: bool) -> None:
        """One read of the product's tickets for every stream here, which wakes the streams
        whose ticket changed. If it fails: with ``fallback`` (a message said tickets changed)
        each re-reads its own, spread over time; a periodic read just waits for its next turn."""
        rows: Mapping[str, Mapping[Any, Any]] | None = None
        if self.reader is not None:
            try:
                rows = await self.reader(pid)
            except Exception as exc:  # the database, for a moment: the streams' own reads
                log.warning("queue %s: tickets not read for the streams: %s", pid, exc)
        if rows is None:
            if fallback:
                for listener in crowd:
                    listener.row = None
                self._wake_spread(crowd, FALLBACK_READS_PER_SECOND, reread=True)
            return
        changed = []
        for listener in crowd:
            row = rows.get(listener.ticket_id)
            if row is not None and told_key(row) != listener.known:
                listener.row = row
                changed.append(listener)
        self._wake_spread(changed, FRAMES_PER_SECOND, reread=False)

    def _wake_spread(self, crowd: list[Listener], per_second: float, *, reread: bool) -> None:
        """Wake a crowd in SPREAD_STEP_SECONDS steps, so that no burst stalls this process."""
        step = max(1, math.ceil(per_second * SPREAD_STEP_SECONDS))
        for listener in crowd[:step]:
            listener.reread = listener.reread or reread
            listener.woken.set()
        if len(crowd) > step:
            rest = crowd[step:]
            asyncio.get_running_loop().call_later(
                SPREAD_STEP_SECONDS, lambda: self._wake_spread(rest, per_second, reread=reread)
            )

    async def _run(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(channel(self.namespace))
                # Whatever happened while not subscribed is unknown: every stream re-reads.
                for pid in list(self.listeners):
                    self.dispatch({"p": pid, "all": True})
                loop = asyncio.get_running_loop()
                while True:
                    raw = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if raw is not None and raw.get("type") == "message":
                        self.dispatch(orjson.loads(raw["data"]))
                    self.refresh(loop.time())
            except (RedisError, OSError, orjson.JSONDecodeError) as exc:
                log.warning("queue updates interrupted: %s", exc)
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
