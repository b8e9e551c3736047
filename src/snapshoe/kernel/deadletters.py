"""Dead-lettered events: look at them, re-drive them, and export how many there are.

Every consumer queue ``<ns>.<queue>`` dead-letters to ``<ns>.<queue>.dlq`` (kernel.messaging).
Nothing consumes a DLQ by itself: a message there is an event some service did not apply
(a poison message, or a bug since fixed), so an operator decides:

- :func:`peek` (``snapshoe events dlq list``) takes messages with ``basic.get`` without acking
  them and gives every one back (``nack(requeue=True)``) at the end: nothing is consumed.
- :func:`replay` (``snapshoe events dlq replay``) re-publishes a message straight to its
  original queue (default exchange, publisher confirm, ``mandatory``) and acks it from the DLQ
  only once the broker confirmed the copy; anything else goes back to the DLQ. A crash in
  between gives a duplicate (the consumer's inbox drops it), never a loss.
- :class:`EventGauges` sets ``snapshoe_events_dlq_messages{queue}`` and
  ``snapshoe_events_queue_messages{queue}`` (consumer lag) from the broker itself (a passive
  queue declare returns the queue's message count), so every process that exports them
  reports the same, true number, however many processes there are; ``snapshoe_broker_up``
  from whether that look reached the broker; and the outbox figures
  (``snapshoe_outbox_unroutable_events``, ``_backlog_events``, ``_oldest_age_seconds``) from
  the service's database, likewise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import Gauge
from sqlalchemy import Table

from snapshoe.kernel.broker import connect, publish_copy
from snapshoe.kernel.db import Sessions
from snapshoe.kernel.outbox import backlog, unroutable_count
from snapshoe.kernel.settings import Settings

log = logging.getLogger("snapshoe.deadletters")

# Read from the broker or the database at scrape time: the same in every process, so in
# multiprocess mode (kernel.metrics) the most recent reading is the figure.
DLQ_DEPTH = Gauge(
    "snapshoe_events_dlq_messages",
    "Messages in a dead-letter queue (read from the broker; the same in every process)",
    ["queue"],
    multiprocess_mode="mostrecent",
)
QUEUE_READY = Gauge(
    "snapshoe_events_queue_messages",
    "Messages ready in a consumer queue, not yet taken by its consumers (consumer lag)",
    ["queue"],
    multiprocess_mode="mostrecent",
)
BROKER_UP = Gauge(
    "snapshoe_broker_up",
    "1 when the service's last look at RabbitMQ (at scrape time) reached it, else 0",
    ["service"],
    multiprocess_mode="mostrecent",
)
OUTBOX_UNROUTABLE = Gauge(
    "snapshoe_outbox_unroutable_events",
    "Unpublished outbox events the broker returned as unroutable (read from the database)",
    ["service"],
    multiprocess_mode="mostrecent",
)
OUTBOX_BACKLOG = Gauge(
    "snapshoe_outbox_backlog_events",
    "Outbox events written and not yet published (read from the database)",
    ["service"],
    multiprocess_mode="mostrecent",
)
OUTBOX_AGE = Gauge(
    "snapshoe_outbox_oldest_age_seconds",
    "How long the oldest unpublished outbox event has waited (0: none waiting)",
    ["service"],
    multiprocess_mode="mostrecent",
)
BODY_HEAD_BYTES = 200
# Every service's consumer queues (the union of their ``consumers.QUEUES``), for the operator's
# DLQ figure (GET /api/admin/operations): the kernel imports no service, so the names are
# written here too, and tests/unit/kernel/test_platform_queues.py keeps the two the same.
PLATFORM_QUEUES = (
    "orders.payments",
    "payments.refunds",
    "users.cart",
    "users.draw_mail",
    "users.order_mail",
)


@dataclass
class DeadLetter:
    queue: str  # the original queue (full name)
    message_id: str
    type: str
    reason: str  # why it died (x-first-death-reason / the newest x-death entry)
    deaths: list[dict[str, Any]] = field(default_factory=list)
    body_head: str = ""
    replays: int = 0

    def line(self) -> str:
        deaths = "; ".join(
            f"{d.get('reason')} x{d.get('count')} from {d.get('queue')}" for d in self.deaths
        )
        return (
            f"{self.queue}.dlq  id={self.message_id}  type={self.type}  reason={self.reason}"
            f"  deaths=[{deaths}]  replays={self.replays}\n    body: {self.body_head}"
        )


def full_queue_name(settings: Settings, queue: str) -> str:
    """``orders.payments``, ``<ns>.orders.payments`` or its ``.dlq``: the original queue."""
    name = queue.removesuffix(".dlq")
    prefix = f"{settings.namespace}."
    return name if name.startswith(prefix) else prefix + name


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _dead_letter(queue: str, message: AbstractIncomingMessage) -> DeadLetter:
    headers: dict[str, Any] = dict(message.headers or {})
    deaths = []
    for entry in headers.get("x-death") or []:
        if isinstance(entry, dict):
            deaths.append(
                {
                    "reason": _text(entry.get("reason", "")),
                    "queue": _text(entry.get("queue", "")),
                    "count": entry.get("count"),
                    "time": str(entry.get("time", "")),
                }
            )
    reason = _text(headers.get("x-first-death-reason") or (deaths[0]["reason"] if deaths else ""))
    return DeadLetter(
        queue=queue,
        message_id=message.message_id or "",
        type=message.type or "",
        reason=reason or "unknown",
        deaths=deaths,
        body_head=message.body[:BODY_HEAD_BYTES].decode(errors="replace"),
        replays=int(headers.get("snapshoe-replays", 0) or 0),
    )


async def _each_dead_letter(
    settings: Settings,
    queues: Sequence[str],
    visit: Callable[[str, AbstractIncomingMessage], Awaitable[bool]],
    *,
    limit: int,
) -> None:
    """Take up to ``limit`` messages of each DLQ unacked; ``visit`` returns True when it acked
    the message; every other one is given back to its DLQ at the end."""
    connection = await connect(settings)
    async with connection:
        for queue in queues:
            name = full_queue_name(settings, queue)
            channel = await connection.channel(publisher_confirms=True)
            try:
                dlq = await channel.declare_queue(f"{name}.dlq", passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                continue  # never declared: nothing dead-lettered there
            held: list[AbstractIncomingMessage] = []
            try:
                for _ in range(limit):
                    message = await dlq.get(no_ack=False, fail=False, timeout=5)
                    if message is None:
                        break
                    if not await visit(name, message):
                        held.append(message)
            finally:
                for message in held:
                    await message.nack(requeue=True)
                await channel.close()


async def peek(settings: Settings, queues: Sequence[str], *, limit: int = 100) -> list[DeadLetter]:
    """The dead letters of ``queues`` (short or full names), none consumed."""
    found: list[DeadLetter] = []

    async def visit(queue: str, message: AbstractIncomingMessage) -> bool:
        found.append(_dead_letter(queue, message))
        return False

    await _each_dead_letter(settings, queues, visit, limit=limit)
    return found


async def replay(
    settings: Settings, queues: Sequence[str], *, ids: set[str] | None, limit: int = 10_000
) -> list[DeadLetter]:
    """Re-publish dead letters (those with a message id in ``ids``; all when None) to their
    original queue; each is acked from its DLQ only after the broker confirmed the copy."""
    done: list[DeadLetter] = []

    async def visit(queue: str, message: AbstractIncomingMessage) -> bool:
        if ids is not None and message.message_id not in ids:
            return False
        letter = _dead_letter(queue, message)
        headers = {k: v for k, v in (message.headers or {}).items() if not str(k).startswith("x-")}
        headers["snapshoe-replays"] = letter.replays + 1
        if not await publish_copy(message, queue, headers):
            log.error("replay of %s to %s not confirmed", message.message_id, queue)
            return False
        await message.ack()
        done.append(letter)
        return True

    await _each_dead_letter(settings, queues, visit, limit=limit)
    return done


async def dlq_depths(settings: Settings, queues: Sequence[str]) -> dict[str, int]:
    """Messages in each DLQ (full DLQ name -> count), from passive declares."""
    return await queue_depths(settings, queues, dlq=True)


async def queue_depths(
    settings: Settings, queues: Sequence[str], *, dlq: bool, with_dlq: bool = False
) -> dict[str, int]:
    """Messages ready in each queue (or its DLQ; or both with ``with_dlq``), full name ->
    count, from passive declares; a queue never declared is left out."""
    depths: dict[str, int] = {}
    connection = await aio_pika.connect(settings.amqp_url, timeout=2)
    names = [full_queue_name(settings, q) for q in queues]
    if with_dlq:
        names = [n for name in names for n in (name, f"{name}.dlq")]
    elif dlq:
        names = [f"{name}.dlq" for name in names]
    async with connection:
        for name in names:
            channel = await connection.channel()
            try:
                q = await channel.declare_queue(name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                continue
            depths[name] = int(q.declaration_result.message_count or 0)
            await channel.close()
    return depths


class EventGauges:
    """Refreshes the DLQ and unroutable gauges of one service when ``/metrics`` is scraped, at
    most every ``ttl`` seconds (a scrape never waits on the broker more than that often)."""

    def __init__(
        self,
        settings: Settings,
        service: str,
        queues: Sequence[str],
        *,
        sessions: Callable[[], Sessions | None] | None = None,
        outbox: Table | None = None,
        ttl: float = 5.0,
    ) -> None:
        self.settings = settings
        self.service = service
        self.queues = list(queues)
        self.sessions = sessions
        self.outbox = outbox
        self.ttl = ttl
        self._at = -float("inf")
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._at < self.ttl:
                return
            self._at = time.monotonic()
            await self._refresh_broker()
            sessions = self.sessions() if self.sessions else None
            if sessions is not None and self.outbox is not None:
                try:
                    n = await unroutable_count(sessions, self.outbox)
                    OUTBOX_UNROUTABLE.labels(self.service).set(n)
                    figures = await backlog(sessions, self.outbox)
                    OUTBOX_BACKLOG.labels(self.service).set(figures.backlog)
                    OUTBOX_AGE.labels(self.service).set(figures.oldest_age_seconds or 0.0)
                except Exception as exc:
                    log.warning("outbox figures not refreshed: %s", exc)

    async def _refresh_broker(self) -> None:
        """Queue and DLQ depths, and whether the broker answered at all (``snapshoe_broker_up``:
        a broker outage is a metric and an alert, never a failed ``/readyz``)."""
        try:
            depths = await queue_depths(self.settings, self.queues, dlq=False, with_dlq=True)
        except Exception as exc:  # the broker is down: keep the last depths, say why
            BROKER_UP.labels(self.service).set(0)
            log.warning("broker figures not refreshed: %s", exc)
            return
        BROKER_UP.labels(self.service).set(1)
        for name, depth in depths.items():
            (DLQ_DEPTH if name.endswith(".dlq") else QUEUE_READY).labels(name).set(depth)
