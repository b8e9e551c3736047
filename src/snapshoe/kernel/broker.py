"""The broker's shape: the events exchange, consumer queues with their dead-letter queues, and
a confirmed copy of a message straight to a queue (see ``kernel.messaging``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection

from snapshoe.kernel.settings import Settings

DELIVERY_LIMIT = 5
# Reconnect backoff cap: a refused connection costs nothing, and events wait in the outbox
# until the relay is back, so a broker that returns is noticed within a few seconds.
MAX_BACKOFF_SECONDS = 5.0


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
