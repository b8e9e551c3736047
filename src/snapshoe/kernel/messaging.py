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
- A *transient* failure (:func:`is_transient`: the database, Redis or the network is away) is
  retried in-process while the consumer holds the message, with capped, jittered exponential
  backoff, so an outage never spends the delivery limit; only a message that fails on its own
  (a poison message: invalid, or a bug) is requeued towards the limit and dead-lettered.
- The relay publishes ``mandatory``: an event no queue is bound to comes back from the broker,
  stays unpublished with ``last_error = 'unroutable'`` and is tried again later.
- :func:`prune` deletes published outbox rows and processed inbox rows after the retention.

Decisions and their reasons: ``docs/events.md``.

Library: aio-pika (maintained asyncio AMQP 0-9-1 client with robust reconnection and publisher
confirms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import aiormq
import httpx
import orjson
import redis.exceptions
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection
from prometheus_client import Counter
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
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel.contracts.events import Event
from snapshoe.kernel.contracts.routing import must_route
from snapshoe.kernel.db import Sessions
from snapshoe.kernel.settings import Settings

log = logging.getLogger("snapshoe.messaging")

DELIVERY_LIMIT = 5
# Reconnect backoff cap: a refused connection costs nothing, and events wait in the outbox
# until the relay is back, so a broker that returns is noticed within a few seconds.
MAX_BACKOFF_SECONDS = 5.0
UNROUTABLE = "unroutable"
# How often a worker prunes old outbox/inbox rows, and how many rows one DELETE takes (short
# transactions: a prune never holds locks the relay or a consumer waits for).
PRUNE_INTERVAL_SECONDS = 300.0
PRUNE_BATCH = 1000

UNROUTABLE_EVENTS = Counter(
    "snapshoe_outbox_unroutable_total",
    "Outbox events the broker returned because no queue is bound to their routing key",
    ["routing_key"],
)
TRANSIENT_RETRIES = Counter(
    "snapshoe_events_transient_retries_total",
    "Consumer retries of an event after a transient backend error (not counted by the broker)",
    ["queue"],
)
POISON_FAILURES = Counter(
    "snapshoe_events_poison_failures_total",
    "Consumer failures that spend a delivery (requeued towards the DLQ)",
    ["queue"],
)

# MariaDB/MySQL error codes of a server that is away, restarting, overloaded or in a lock
# conflict: the same statement can succeed later. Anything else (unknown column, data too long,
# syntax...) is a bug or bad data and must not be retried forever. OperationalError alone does
# not tell them apart: PyMySQL-style drivers (asyncmy) map every unlisted code >= 1000 to it.
TRANSIENT_DB_CODES = frozenset(
    {
        1040,  # too many connections
        1053,  # server shutdown in progress
        1205,  # lock wait timeout
        1213,  # deadlock
        1317,  # query execution was interrupted
        1158,
        1159,
        1160,
        1161,  # network read/write errors and timeouts
        1927,  # connection was killed (MariaDB)
        1969,  # max_statement_time exceeded (MariaDB)
        2002,
        2003,
        2005,
        2006,
        2013,
        2014,
        2055,  # client: cannot connect / server gone / lost
        4031,  # idle client disconnected by the server (MariaDB)
    }
)
_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionError, TimeoutError (== asyncio.TimeoutError), refused sockets
    PoolTimeout,  # no pooled connection within pool_timeout
    InterfaceError,  # the DBAPI connection is unusable
    redis.exceptions.ConnectionError,  # includes BusyLoadingError
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a failover in progress
    httpx.TransportError,  # another service unreachable
    aiormq.exceptions.AMQPConnectionError,
)


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
        # Why the last publish did not happen ('unroutable'), and when to try it again.
        Column("last_error", String(200), nullable=True),
        Column("retry_at", DateTime(timezone=False), nullable=True),
        Index("ix_outbox_unpublished", "published_at", "id"),
    )
    inbox = Table(
        "inbox",
        metadata,
        Column("consumer", String(120), primary_key=True),
        Column("event_id", String(36), primary_key=True),
        Column("processed_at", DateTime(timezone=False), nullable=False),
        Index("ix_inbox_processed_at", "processed_at"),
    )
    return outbox, inbox


def _db_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says a backend is away for now, not that this
    message is wrong: retrying the same message later can succeed.

    Pure: looks only at the exception chain, so it is unit-tested without servers."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError):
            if current.connection_invalidated:
                return True
            orig = current.orig
            if orig is not None:
                if isinstance(orig, _TRANSIENT_TYPES):
                    return True
                code = _db_code(orig)
                if code is not None:
                    return code in TRANSIENT_DB_CODES or (
                        isinstance(current, InterfaceError) and code < 1000
                    )
                if isinstance(current, InterfaceError):
                    return True
        elif isinstance(current, _TRANSIENT_TYPES):
            return True
        elif (code := _db_code(current)) is not None and type(current).__module__.startswith(
            ("asyncmy", "pymysql")
        ):
            return code in TRANSIENT_DB_CODES
        current = current.__cause__ or current.__context__
    return False


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with "equal jitter" (half fixed, half random; AWS
    architecture blog, "Exponential Backoff And Jitter"): consumers retrying after one outage
    spread out instead of stampeding, and none retries much sooner than planned."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return (rng or random).uniform(ceiling / 2, ceiling)


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
        self.unroutable = 0

    async def publish_batch(self, exchange: AbstractExchange) -> int:
        """Publish one batch; returns how many rows were handled (published or found
        unroutable)."""
        o = self.outbox
        now = _now()
        async with self.sessions.begin() as session:
            rows = (
                await session.execute(
                    select(o.c.id, o.c.event_id, o.c.routing_key, o.c.body, o.c.attempts)
                    .where(
                        o.c.published_at.is_(None),
                        or_(o.c.retry_at.is_(None), o.c.retry_at <= now),
                    )
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
                results = await asyncio.gather(
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
                            # No bound queue: the broker returns the message (the result is
                            # the returned message, not a Basic.Ack) instead of dropping it.
                            # Announcements nobody needs (contracts.MUST_ROUTE) may drop.
                            mandatory=must_route(row.routing_key),
                        )
                        for row in rows
                    )
                )
            returned = [
                row
                for row, result in zip(rows, results, strict=True)
                if isinstance(result, aiormq.abc.DeliveredMessage)
            ]
            returned_ids = {r.id for r in returned}
            published = [r.id for r in rows if r.id not in returned_ids]
            if published:
                await session.execute(
                    update(o)
                    .where(o.c.id.in_(published))
                    .values(published_at=now, last_error=None, retry_at=None)
                )
            for row in returned:
                await session.execute(
                    update(o)
                    .where(o.c.id == row.id)
                    .values(
                        attempts=o.c.attempts + 1,
                        last_error=UNROUTABLE,
                        retry_at=now + timedelta(seconds=self._unroutable_delay(row.attempts)),
                    )
                )
        for row in returned:
            UNROUTABLE_EVENTS.labels(row.routing_key).inc()
            log.error(
                "event %s (%s) is unroutable: no queue is bound to it; kept unpublished",
                row.event_id,
                row.routing_key,
                extra={"event_id": row.event_id, "routing_key": row.routing_key},
            )
        self.published += len(published)
        self.unroutable += len(returned)
        return len(rows)

    def _unroutable_delay(self, attempts: int) -> float:
        # Doubling up to an hour: a queue bound later (a consumer deployed after its publisher)
        # picks the events up; an event nobody will ever consume costs one publish an hour.
        base = self.settings.event_unroutable_retry_seconds
        return float(min(3600.0, base * 2.0 ** min(attempts, 12)))

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

    in_flight: set[asyncio.Task[Any]] = set()

    async def on_message(message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            in_flight.add(task)
        try:
            await _on_message(message)
        finally:
            if task is not None:
                in_flight.discard(task)

    async def _on_message(message: AbstractIncomingMessage) -> None:
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
        event_id = body.get("event_id")
        held_since = time.monotonic()
        attempt = 0
        while True:
            try:
                applied = await handle_once(sessions, inbox, name, body, handler)
                break
            except Exception as exc:
                if not is_transient(exc):
                    # Poison (invalid, or a bug): requeue; the quorum queue's delivery limit
                    # dead-letters it after DELIVERY_LIMIT tries.
                    POISON_FAILURES.labels(name).inc()
                    log.exception("handler for %s failed (event %s)", key, event_id)
                    await asyncio.sleep(0.2)
                    await message.nack(requeue=True)
                    return
                TRANSIENT_RETRIES.labels(name).inc()
                delay = retry_delay(
                    attempt, settings.event_retry_base_seconds, settings.event_retry_max_seconds
                )
                attempt += 1
                log.warning(
                    "handler for %s hit a transient error (event %s, try %d): %s; retrying "
                    "in %.2fs without spending a delivery",
                    key,
                    event_id,
                    attempt,
                    _short(exc),
                    delay,
                )
                held = time.monotonic() - held_since
                if stop.is_set() or held + delay > settings.event_retry_hold_seconds:
                    await _requeue_unspent(message, name)
                    return
                await _sleep_or_stop(stop, delay)
        await message.ack()
        if not applied:
            log.info("duplicate event %s ignored by %s", event_id, name)

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
                # Messages held by a retry see ``stop`` and hand themselves back; wait for
                # them before the channel closes (a close would spend their delivery).
                if in_flight:
                    await asyncio.wait(set(in_flight), timeout=10)
        except Exception:
            log.exception("consumer %s failed; reconnecting in %.1fs", name, backoff)
            await _sleep_or_stop(stop, backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


async def publish_copy(
    message: AbstractIncomingMessage, queue: str, headers: dict[str, Any]
) -> bool:
    """Publish a copy of ``message`` with ``headers`` through the default exchange, which routes
    by queue name straight to ``queue`` (mandatory, persistent). True once the broker confirmed
    it; a returned or refused copy is False, and the original must then not be acked."""
    result = await message.channel.basic_publish(
        message.body,
        exchange="",
        routing_key=queue,
        properties=aiormq.spec.Basic.Properties(
            content_type=message.content_type,
            delivery_mode=2,
            message_id=message.message_id,
            message_type=message.type,
            headers=headers,
        ),
        mandatory=True,
    )
    return isinstance(result, aiormq.spec.Basic.Ack)


async def _requeue_unspent(message: AbstractIncomingMessage, queue: str) -> None:
    """Put a message back at the end of its own queue without spending a delivery: publish a
    copy through the default exchange (straight to ``queue``) with a broker confirm, then ack
    the original. A nack would count towards the delivery limit. If the publish fails, the
    message is left unacked and comes back when the channel closes."""
    headers = {k: v for k, v in (message.headers or {}).items() if not str(k).startswith("x-")}
    if not await publish_copy(message, queue, headers):
        log.error(
            "event %s could not be handed back to %s; left unacked", message.message_id, queue
        )
        return
    await message.ack()
    log.info(
        "event %s handed back to the end of %s (still failing transiently)",
        message.message_id,
        queue,
    )


async def prune(
    sessions: Sessions,
    *,
    outbox: Table | None,
    inbox: Table | None,
    older_than: timedelta,
    batch: int = PRUNE_BATCH,
    now: datetime | None = None,
) -> tuple[int, int]:
    """Delete published outbox rows and processed inbox rows older than ``older_than``, one
    short transaction per ``batch`` rows. Unpublished rows are never deleted. Returns the
    (outbox, inbox) rows deleted."""
    cutoff = (now or _now()) - older_than
    counts = [0, 0]
    for i, (table, column) in enumerate(((outbox, "published_at"), (inbox, "processed_at"))):
        if table is None:
            continue
        col = table.c[column]
        while True:
            async with sessions.begin() as session:
                result = await session.execute(
                    delete(table)
                    .where(col.is_not(None), col < cutoff)
                    .with_dialect_options(mysql_limit=batch)
                )
            n = int(getattr(result, "rowcount", 0) or 0)
            counts[i] += n
            if n < batch:
                break
    return counts[0], counts[1]


async def run_pruner(
    settings: Settings,
    sessions: Sessions,
    stop: asyncio.Event,
    *,
    outbox: Table | None,
    inbox: Table | None,
    interval: float = PRUNE_INTERVAL_SECONDS,
) -> None:
    """The retention step of a service's worker: prune, then wait ``interval``. Any number may
    run (each DELETE takes whatever rows are old; two pruners just share the work)."""
    older = timedelta(days=settings.event_retention_days)
    while not stop.is_set():
        try:
            deleted = await prune(sessions, outbox=outbox, inbox=inbox, older_than=older)
            if any(deleted):
                log.info(
                    "pruned %d outbox and %d inbox rows older than %s",
                    *deleted,
                    older,
                )
        except Exception:
            log.exception("outbox/inbox prune failed")
        await _sleep_or_stop(stop, interval)


async def unroutable_count(sessions: Sessions, outbox: Table) -> int:
    """Unpublished outbox rows the broker returned as unroutable (a gauge of /metrics)."""
    o = outbox
    async with sessions() as session:
        q = (
            select(func.count())
            .select_from(o)
            .where(o.c.published_at.is_(None), o.c.last_error == UNROUTABLE)
        )
        return int((await session.execute(q)).scalar_one())


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
