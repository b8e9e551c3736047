"""The outbox relay: moves outbox rows to RabbitMQ with publisher confirms (see
``kernel.messaging``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import aio_pika
import aiormq
import orjson
from aio_pika.abc import AbstractExchange
from prometheus_client import Counter
from sqlalchemy import Row, Table, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel import tracing
from snapshoe.kernel.broker import MAX_BACKOFF_SECONDS, connect, declare_exchange
from snapshoe.kernel.contracts.routing import must_route
from snapshoe.kernel.db import Sessions
from snapshoe.kernel.outbox import UNROUTABLE, _now
from snapshoe.kernel.settings import Settings
from snapshoe.kernel.transient import sleep_or_stop

log = logging.getLogger("snapshoe.messaging")

UNROUTABLE_EVENTS = Counter(
    "snapshoe_outbox_unroutable_total",
    "Outbox events the broker returned because no queue is bound to their routing key",
    ["routing_key"],
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
        now = _now()
        async with self.sessions.begin() as session:
            rows = await self._claim(session, now)
            if not rows:
                return 0
            # Pipelined publishes; each awaits its broker confirm. Bounded: a robust channel
            # waits for its connection to come back and a half-open socket never confirms, and
            # meanwhile this transaction holds the rows; on timeout it rolls back (rows stay
            # unpublished) and run() starts over on a new connection.
            async with asyncio.timeout(self.publish_timeout):
                results = await asyncio.gather(*(_publish(exchange, row) for row in rows))
            returned = [
                row
                for row, result in zip(rows, results, strict=True)
                if isinstance(result, aiormq.abc.DeliveredMessage)
            ]
            returned_ids = {r.id for r in returned}
            published = [r.id for r in rows if r.id not in returned_ids]
            await self._mark(session, now, published, returned)
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

    async def _claim(self, session: AsyncSession, now: datetime) -> Sequence[Any]:
        """Lock the next due unpublished rows (skipping those another relay holds)."""
        o = self.outbox
        return (
            await session.execute(
                select(
                    o.c.id, o.c.event_id, o.c.routing_key, o.c.body, o.c.attempts, o.c.trace_headers
                )
                .where(
                    o.c.published_at.is_(None),
                    or_(o.c.retry_at.is_(None), o.c.retry_at <= now),
                )
                .order_by(o.c.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            )
        ).all()

    async def _mark(
        self,
        session: AsyncSession,
        now: datetime,
        published: list[int],
        returned: list[Any],
    ) -> None:
        """Mark the confirmed rows published and the returned ones unroutable, due later."""
        o = self.outbox
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
                            await sleep_or_stop(stop, self.idle)
            except Exception:
                log.exception("outbox relay failed; retrying in %.1fs", backoff)
                await sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


async def _publish(exchange: AbstractExchange, row: Row[Any]) -> Any:
    """Publish one outbox row; the result is the broker's confirm or the returned message.
    The row's trace context and request id go as message headers; with tracing on, the
    publish is a span of the trace that wrote the event."""
    headers: dict[str, Any] = dict(row.trace_headers or {})
    parent = tracing.extracted(headers)
    if parent is None:
        return await _send(exchange, row, headers)
    with tracing.tracer.start_as_current_span(
        f"publish {row.routing_key}",
        context=parent,
        kind=tracing.PRODUCER,
        attributes={"messaging.system": "rabbitmq", "messaging.message.id": row.event_id},
    ):
        return await _send(exchange, row, headers | tracing.carrier())


async def _send(exchange: AbstractExchange, row: Row[Any], headers: dict[str, Any]) -> Any:
    return await exchange.publish(
        aio_pika.Message(
            orjson.dumps(row.body),
            message_id=row.event_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            type=str(row.body.get("event_type", "")),
            headers=headers or None,
        ),
        routing_key=row.routing_key,
        # No bound queue: the broker returns the message (the result is the returned
        # message, not a Basic.Ack) instead of dropping it. Announcements nobody needs
        # (contracts.MUST_ROUTE) may drop.
        mandatory=must_route(row.routing_key),
    )
