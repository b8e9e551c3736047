"""The waiting room's live updates inside one process: one Redis pub/sub subscription per
process (not one per open stream), fanned out to the streams open here.

Whoever changes tickets (the outflow, a used admission) publishes a small message on the
namespace's queue channel after its transaction commits: ``{"p": product, "head": n}`` (every
waiting position moved), ``{"p": product, "t": [ticket ids]}`` (those tickets changed state) or
``{"p": product, "all": true}`` (re-read every ticket: the release ranked them, the queue
ended). The hub wakes the streams concerned; each re-reads what it needs. A lost message costs
a stream at most its periodic re-read (queue_stream.py): the database stays the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("snapshoe.products.queue")

RECONNECT_SECONDS = 1.0


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
    head: int | None = None  # the latest head a message told (None: none since the last read)
    reread: bool = False  # the ticket itself changed: read it again


@dataclass
class QueueHub:
    redis: Redis
    namespace: str
    listeners: dict[str, set[Listener]] = field(default_factory=dict)  # product -> streams
    by_ticket: dict[str, set[Listener]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

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

    def dispatch(self, message: dict[str, Any]) -> None:
        pid = str(message.get("p", ""))
        if "head" in message:
            for listener in self.listeners.get(pid, ()):
                listener.head = int(message["head"])
                listener.woken.set()
        if message.get("all"):
            self._reread(self.listeners.get(pid, ()))
        tickets: Sequence[str] = message.get("t") or ()
        for ticket_id in tickets:
            self._reread(self.by_ticket.get(str(ticket_id), ()))

    @staticmethod
    def _reread(listeners: Any) -> None:
        for listener in listeners:
            listener.reread = True
            listener.woken.set()

    async def _run(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(channel(self.namespace))
                # Whatever happened while not subscribed is unknown: every stream re-reads.
                for pid in list(self.listeners):
                    self.dispatch({"p": pid, "all": True})
                while True:
                    raw = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if raw is not None and raw.get("type") == "message":
                        self.dispatch(orjson.loads(raw["data"]))
            except (RedisError, OSError, orjson.JSONDecodeError) as exc:
                log.warning("queue updates interrupted: %s", exc)
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
