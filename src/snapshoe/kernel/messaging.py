"""Reliable events: transactional outbox, relay with publisher confirms, idempotent consumers.

- A service writes its event into its own ``outbox`` table in the same transaction as the change
  (:func:`add_to_outbox`), so a change without its event, or an event without its change, is
  impossible.
- :class:`Relay` publishes unpublished rows with publisher confirms and marks them published;
  it retries until the broker confirms. Several relays may run: rows are claimed with
  ``FOR UPDATE SKIP LOCKED``. A crash between publish and mark gives a duplicate, never a loss.
- :func:`consume` records each event id in the consumer's ``inbox`` table in the same
  transaction as the effect, so a duplicate delivery has no second effect. Queues are quorum
  queues with a delivery limit and a dead-letter exchange: a message that keeps failing ends in
  ``<queue>.dlq``, never silently acked.

Library: aio-pika (maintained asyncio AMQP 0-9-1 client with robust reconnection and publisher
confirms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel.contracts import Event
from snapshoe.kernel.db import Sessions
from snapshoe.kernel.settings import Settings

log = logging.getLogger("snapshoe.messaging")

DELIVERY_LIMIT = 5
# Reconnect backoff cap: a refused connection costs nothing, and events wait in the outbox
# until the relay is back, so a broker that returns is noticed within a few seconds.
MAX_BACKOFF_SECONDS = 5.0


def messaging_tables(metadata: MetaData) -> tuple[Table, Table]:
    """Define ``outbox`` and ``inbox`` on a service's metadata (its migration creates them)."""
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("routing_key", String(120), nullable=False),
        Column("body", JSON, nullable=False),
        Column("created_at", DateTime(timezone=False), nullable=False),
        Column("published_at", DateTime(timezone=False), nullable=True),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Index("ix_outbox_unpublished", "published_at", "id"),
    )
    inbox = Table(
        "inbox",
        metadata,
        Column("consumer", String(120), primary_key=True),
        Column("event_id", String(36), primary_key=True),
        Column("processed_at", DateTime(timezone=False), nullable=False),
    )
    return outbox, inbox


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


async def add_to_outbox(session: AsyncSession, outbox: Table, event: Event) -> None:
    await session.execute(
        insert(outbox).values(
            event_id=event.event_id,
            routing_key=event.routing_key(),
            body=event.to_message(),
            created_at=_now(),
        )
    )


async def add_many_to_outbox(session: AsyncSession, outbox: Table, events: Sequence[Event]) -> None:
    now = _now()
    await session.execute(
        insert(outbox),
        [
            {
                "event_id": e.event_id,
                "routing_key": e.routing_key(),
                "body": e.to_message(),
                "created_at": now,
            }
            for e in events
        ],
    )


def exchange_name(settings: Settings) -> str:
    return f"{settings.namespace}.events"


async def connect(settings: Settings) -> AbstractRobustConnection:
    return await aio_pika.connect_robust(settings.amqp_url, timeout=5)


async def declare_exchange(
    channel: aio_pika.abc.AbstractChannel, settings: Settings
) -> AbstractExchange:
    return await channel.declare_exchange(
        exchange_name(settings), aio_pika.ExchangeType.TOPIC, durable=True
    )


class Relay:
    """Moves outbox rows to RabbitMQ. Safe to run in any number of processes."""

    def __init__(
        self,
        settings: Settings,
        sessions: Sessions,
        outbox: Table,
        *,
        batch_size: int = 200,
        idle_seconds: float = 0.05,
        publish_timeout: float = 30.0,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.outbox = outbox
        self.batch_size = batch_size
        self.idle = idle_seconds
        self.publish_timeout = publish_timeout
        self.published = 0

    async def publish_batch(self, exchange: AbstractExchange) -> int:
        """Publish one batch; returns how many rows were published."""
        o = self.outbox
        async with self.sessions.begin() as session:
            rows = (
                await session.execute(
                    select(o.c.id, o.c.event_id, o.c.routing_key, o.c.body)
                    .where(o.c.published_at.is_(None))
                    .order_by(o.c.id)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            # Pipelined publishes; each awaits its broker confirm. Bounded: a robust channel
            # waits for its connection to come back and a half-open socket never confirms, and
            # meanwhile this transaction holds the rows; on timeout it rolls back (rows stay
            # unpublished) and run() starts over on a new connection.
            async with asyncio.timeout(self.publish_timeout):
                await asyncio.gather(
                    *(
                        exchange.publish(
                            aio_pika.Message(
                                orjson.dumps(row.body),
                                message_id=row.event_id,
                                content_type="application/json",
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                type=str(row.body.get("event_type", "")),
                            ),
                            routing_key=row.routing_key,
                            mandatory=False,
                        )
                        for row in rows
                    )
                )
            await session.execute(
                update(o).where(o.c.id.in_([r.id for r in rows])).values(published_at=_now())
            )
        self.published += len(rows)
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                connection = await connect(self.settings)
                async with connection:
                    channel = await connection.channel(publisher_confirms=True)
                    exchange = await declare_exchange(channel, self.settings)
                    backoff = 0.5
                    while not stop.is_set():
                        n = await self.publish_batch(exchange)
                        if n < self.batch_size:
                            await _sleep_or_stop(stop, self.idle)
            except Exception:
                log.exception("outbox relay failed; retrying in %.1fs", backoff)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


Handler = Callable[[AsyncSession, dict[str, Any]], Awaitable[None]]


async def declare_consumer_queue(
    channel: aio_pika.abc.AbstractChannel,
    settings: Settings,
    queue: str,
    routing_keys: Sequence[str],
) -> aio_pika.abc.AbstractQueue:
    exchange = await declare_exchange(channel, settings)
    dlx = await channel.declare_exchange(
        f"{settings.namespace}.dlx", aio_pika.ExchangeType.DIRECT, durable=True
    )
    dlq = await channel.declare_queue(
        f"{queue}.dlq", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dlq.bind(dlx, routing_key=queue)
    q = await channel.declare_queue(
        queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": dlx.name,
            "x-dead-letter-routing-key": queue,
        },
    )
    for key in routing_keys:
        await q.bind(exchange, routing_key=key)
    return q


async def declare_queues(settings: Settings, queues: Mapping[str, Sequence[str]]) -> None:
    """Declare consumer queues and their bindings ahead of any consumer (``snapshoe migrate``
    does this): an event published before its consumer first starts then waits in the queue
    instead of being dropped by an exchange with nowhere to route it."""
    connection = await connect(settings)
    async with connection:
        channel = await connection.channel()
        for queue, routing_keys in queues.items():
            await declare_consumer_queue(
                channel, settings, f"{settings.namespace}.{queue}", list(routing_keys)
            )


async def handle_once(
    sessions: Sessions, inbox: Table, consumer: str, body: dict[str, Any], handler: Handler
) -> bool:
    """Apply ``handler`` once per event id. Returns False if the event was already processed."""
    event_id = str(body.get("event_id", ""))
    if not event_id:
        raise ValueError("event without event_id")
    try:
        async with sessions.begin() as session:
            await session.execute(
                insert(inbox).values(consumer=consumer, event_id=event_id, processed_at=_now())
            )
            await handler(session, body)
    except IntegrityError as exc:
        if "Duplicate entry" in str(exc.orig) and "PRIMARY" in str(exc.orig):
            return False
        raise
    return True


async def consume(
    settings: Settings,
    sessions: Sessions,
    inbox: Table,
    *,
    queue: str,
    handlers: dict[str, Handler],
    stop: asyncio.Event,
    prefetch: int = 32,
    ignore: Callable[[dict[str, Any]], bool] | None = None,
) -> None:
    """Consume ``handlers``' routing keys from a durable queue until ``stop`` is set.

    ``ignore``: events the handler would leave unchanged, told from the body alone; they are
    acked without a transaction or an inbox row (a redelivery is ignored the same way)."""
    name = f"{settings.namespace}.{queue}"

    async def on_message(message: AbstractIncomingMessage) -> None:
        try:
            body = orjson.loads(message.body)
            key = f"{body['event_type']}.v{body['version']}"
            handler = handlers[key]
        except Exception:
            log.exception("undecodable message on %s; dead-lettering it", name)
            await message.reject(requeue=False)
            return
        if ignore is not None and ignore(body):
            await message.ack()
            return
        try:
            applied = await handle_once(sessions, inbox, name, body, handler)
        except Exception:
            # Requeue: the quorum queue's delivery limit dead-letters it after DELIVERY_LIMIT tries.
            log.exception("handler for %s failed (event %s)", key, body.get("event_id"))
            await asyncio.sleep(0.2)
            await message.nack(requeue=True)
            return
        await message.ack()
        if not applied:
            log.info("duplicate event %s ignored by %s", body.get("event_id"), name)

    backoff = 0.5
    while not stop.is_set():
        try:
            connection = await connect(settings)
            async with connection:
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=prefetch)
                q = await declare_consumer_queue(channel, settings, name, list(handlers))
                tag = await q.consume(on_message)
                backoff = 0.5
                await stop.wait()
                await q.cancel(tag)
        except Exception:
            log.exception("consumer %s failed; reconnecting in %.1fs", name, backoff)
            await _sleep_or_stop(stop, backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
