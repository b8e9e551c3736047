"""Idempotent consumers: each event applied once per consumer (its id in the ``inbox`` in the
same transaction as the effect), transient failures retried in-process without spending a
delivery, poison messages requeued towards the dead-letter queue (see ``kernel.messaging``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import Counter
from sqlalchemy import Table, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel import tracing
from snapshoe.kernel.broker import (
    MAX_BACKOFF_SECONDS,
    connect,
    declare_consumer_queue,
    publish_copy,
)
from snapshoe.kernel.db import Sessions
from snapshoe.kernel.outbox import _now
from snapshoe.kernel.settings import Settings
from snapshoe.kernel.transient import is_transient, retry_delay, sleep_or_stop

log = logging.getLogger("snapshoe.messaging")

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

Handler = Callable[[AsyncSession, dict[str, Any]], Awaitable[None]]


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
    consumer = _QueueConsumer(settings, sessions, inbox, name, handlers, stop, ignore)
    backoff = 0.5
    while not stop.is_set():
        try:
            connection = await connect(settings)
            async with connection:
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=prefetch)
                q = await declare_consumer_queue(channel, settings, name, list(handlers))
                tag = await q.consume(consumer.on_message)
                backoff = 0.5
                await stop.wait()
                await q.cancel(tag)
                # Messages held by a retry see ``stop`` and hand themselves back; wait for
                # them before the channel closes (a close would spend their delivery).
                if consumer.in_flight:
                    await asyncio.wait(set(consumer.in_flight), timeout=10)
        except Exception:
            log.exception("consumer %s failed; reconnecting in %.1fs", name, backoff)
            await sleep_or_stop(stop, backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)


class _QueueConsumer:
    """What :func:`consume` does with each message of queue ``name``."""

    def __init__(
        self,
        settings: Settings,
        sessions: Sessions,
        inbox: Table,
        name: str,
        handlers: dict[str, Handler],
        stop: asyncio.Event,
        ignore: Callable[[dict[str, Any]], bool] | None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.inbox = inbox
        self.name = name
        self.handlers = handlers
        self.stop = stop
        self.ignore = ignore
        self.in_flight: set[asyncio.Task[Any]] = set()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.in_flight.add(task)
        try:
            await self._on_message(message)
        finally:
            if task is not None:
                self.in_flight.discard(task)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            body = orjson.loads(message.body)
            key = f"{body['event_type']}.v{body['version']}"
            handler = self.handlers[key]
        except Exception:
            log.exception("undecodable message on %s; dead-lettering it", self.name)
            await message.reject(requeue=False)
            return
        if self.ignore is not None and self.ignore(body):
            await message.ack()
            return
        with _continued(message, self.name, key):
            applied = await self._apply(message, body, key, handler)
        if applied is None:
            return
        await message.ack()
        if not applied:
            log.info("duplicate event %s ignored by %s", body.get("event_id"), self.name)

    async def _apply(
        self, message: AbstractIncomingMessage, body: dict[str, Any], key: str, handler: Handler
    ) -> bool | None:
        """Apply once, retrying transient failures while holding the message. Whether it was
        applied (False: a duplicate), or None when the message was nacked or handed back."""
        settings, name = self.settings, self.name
        event_id = body.get("event_id")
        held_since = time.monotonic()
        attempt = 0
        while True:
            try:
                return await handle_once(self.sessions, self.inbox, name, body, handler)
            except Exception as exc:
                if not is_transient(exc):
                    # Poison (invalid, or a bug): requeue; the quorum queue's delivery limit
                    # dead-letters it after DELIVERY_LIMIT tries.
                    POISON_FAILURES.labels(name).inc()
                    log.exception("handler for %s failed (event %s)", key, event_id)
                    await asyncio.sleep(0.2)
                    await message.nack(requeue=True)
                    return None
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
                if self.stop.is_set() or held + delay > settings.event_retry_hold_seconds:
                    await _requeue_unspent(message, name)
                    return None
                await sleep_or_stop(self.stop, delay)


@contextlib.contextmanager
def _continued(message: AbstractIncomingMessage, queue: str, key: str) -> Iterator[None]:
    """Handle the event in the trace and with the request id it was published with: a
    consumer span, child of the publish, when tracing is on; its log lines and the events it
    writes carry the same trace either way."""
    headers = message.headers or {}
    tokens = tracing.continue_from(headers)
    parent = tracing.extracted(headers)
    try:
        if parent is None:
            yield
            return
        with tracing.tracer.start_as_current_span(
            f"process {key}",
            context=parent,
            kind=tracing.CONSUMER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.destination.name": queue,
                "messaging.message.id": str(message.message_id or ""),
            },
        ):
            yield
    finally:
        tracing.reset(tokens)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


async def _requeue_unspent(message: AbstractIncomingMessage, queue: str) -> None:
    """Put a message back at the end of its own queue without spending a delivery: publish a
    copy through the default exchange (straight to ``queue``) with a broker confirm, then ack
    the original. A nack would count towards the delivery limit. If the publish fails, the
    message is left unacked and comes back when the channel closes."""
    # The broker's own x- headers go; the trace and the request id stay with the event.
    headers = {
        k: v
        for k, v in (message.headers or {}).items()
        if not str(k).startswith("x-") or k == "x-request-id"
    }
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
