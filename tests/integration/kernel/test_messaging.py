"""The outbox relay and idempotent consumers against real MariaDB and RabbitMQ."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

import aio_pika
import orjson
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from tests.support.platform import make_test_settings
from tests.support.waiting import wait_until

from snapshoe.kernel import messaging
from snapshoe.kernel.contracts import Event
from snapshoe.kernel.db import create_engine, create_sessions, drop_database, ensure_database
from snapshoe.kernel.settings import Settings

SERVICE = "kernel"
QUEUES = ("pings", "pings.dlq", "broken", "broken.dlq", "flaky", "flaky.dlq")


class Pinged(Event):
    TYPE: ClassVar[str] = "test.pinged"
    VERSION: ClassVar[int] = 1
    n: int


@dataclass
class World:
    settings: Settings
    engine: AsyncEngine
    sessions: Any
    outbox: Table
    inbox: Table
    effects: Table


@pytest.fixture
async def world() -> AsyncIterator[World]:
    # A namespace of its own per test, so queues and exchanges never see another test's events.
    settings = make_test_settings(namespace=f"snapshoe_msg_{uuid.uuid4().hex[:8]}")
    await ensure_database(settings, SERVICE)
    metadata = MetaData()
    outbox, inbox = messaging.messaging_tables(metadata)
    effects = Table(
        "effects",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False),
    )
    engine = create_engine(settings, SERVICE)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield World(settings, engine, create_sessions(engine), outbox, inbox, effects)
    await engine.dispose()
    await drop_database(settings, SERVICE)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        for q in QUEUES:
            await channel.queue_delete(f"{settings.namespace}.{q}")
        await channel.exchange_delete(messaging.exchange_name(settings))
        await channel.exchange_delete(f"{settings.namespace}.dlx")


async def _count(world: World, table: Table) -> int:
    async with world.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(table))).scalar_one())


async def _emit(world: World, n: int) -> list[str]:
    ids = []
    for i in range(n):
        event = Pinged(n=i)
        ids.append(event.event_id)
        async with world.sessions.begin() as session:
            await messaging.add_to_outbox(session, world.outbox, event)
    return ids


async def test_events_reach_consumer_once_even_when_delivered_three_times(world: World) -> None:
    async def record(session: AsyncSession, body: dict[str, Any]) -> None:
        await session.execute(insert(world.effects).values(event_id=body["event_id"]))

    stop = asyncio.Event()
    consumer = asyncio.create_task(
        messaging.consume(
            world.settings,
            world.sessions,
            world.inbox,
            queue="pings",
            handlers={Pinged.routing_key(): record},
            stop=stop,
        )
    )
    await asyncio.sleep(1)  # queue declared and bound before the first publish
    ids = await _emit(world, 50)
    relay = messaging.Relay(world.settings, world.sessions, world.outbox)
    connection = await messaging.connect(world.settings)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await messaging.declare_exchange(channel, world.settings)
        assert await relay.publish_batch(exchange) == 50
        assert await relay.publish_batch(exchange) == 0  # all marked published
        # Deliver every event twice more, shuffled: duplicates must have no second effect.
        bodies = [Pinged(n=0).model_copy(update={"event_id": i}).to_message() for i in ids]
        dupes = bodies * 2
        random.shuffle(dupes)
        for body in dupes:
            await exchange.publish(
                aio_pika.Message(orjson.dumps(body)),
                routing_key=Pinged.routing_key(),
            )
    await wait_until(lambda: _inbox_at_least(world, 50), timeout=20)
    await asyncio.sleep(1.5)  # let the 100 duplicates arrive and be ignored
    stop.set()
    await consumer
    assert await _count(world, world.effects) == 50
    async with world.sessions() as session:
        distinct = (
            await session.execute(select(func.count(func.distinct(world.effects.c.event_id))))
        ).scalar_one()
    assert distinct == 50


async def _inbox_at_least(world: World, n: int) -> bool:
    return await _count(world, world.inbox) >= n


async def test_relay_crash_between_publish_and_mark_duplicates_but_never_loses(
    world: World,
) -> None:
    received: list[str] = []

    async def record(session: AsyncSession, body: dict[str, Any]) -> None:
        received.append(body["event_id"])
        await session.execute(insert(world.effects).values(event_id=body["event_id"]))

    stop = asyncio.Event()
    consumer = asyncio.create_task(
        messaging.consume(
            world.settings,
            world.sessions,
            world.inbox,
            queue="pings",
            handlers={Pinged.routing_key(): record},
            stop=stop,
        )
    )
    await asyncio.sleep(1)
    ids = await _emit(world, 20)

    class CrashAfterPublish(messaging.Relay):
        """Publishes for real, then dies before the mark-published update commits."""

        async def publish_batch(self, exchange: Any) -> int:
            o = self.outbox
            async with self.sessions.begin() as session:
                rows = (await session.execute(select(o.c.routing_key, o.c.body))).all()
                for row in rows:
                    await exchange.publish(
                        aio_pika.Message(orjson.dumps(row.body)), routing_key=row.routing_key
                    )
                raise ConnectionError("relay killed")

    connection = await messaging.connect(world.settings)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await messaging.declare_exchange(channel, world.settings)
        with pytest.raises(ConnectionError):
            await CrashAfterPublish(world.settings, world.sessions, world.outbox).publish_batch(
                exchange
            )
        # Nothing was marked: a restarted relay publishes all 20 again.
        restarted = messaging.Relay(world.settings, world.sessions, world.outbox)
        assert await restarted.publish_batch(exchange) == 20
    await wait_until(lambda: _inbox_at_least(world, 20), timeout=20)
    await asyncio.sleep(1)
    stop.set()
    await consumer
    assert sorted(set(received)) == sorted(ids)  # none lost
    assert await _count(world, world.effects) == 20  # and no double effect


async def test_a_message_that_keeps_failing_is_dead_lettered(world: World) -> None:
    attempts = 0

    async def broken(session: AsyncSession, body: dict[str, Any]) -> None:
        nonlocal attempts
        attempts += 1
        await session.execute(insert(world.effects).values(event_id=body["event_id"]))
        raise RuntimeError("always fails")

    stop = asyncio.Event()
    consumer = asyncio.create_task(
        messaging.consume(
            world.settings,
            world.sessions,
            world.inbox,
            queue="broken",
            handlers={Pinged.routing_key(): broken},
            stop=stop,
        )
    )
    await asyncio.sleep(1)
    await _emit(world, 1)
    relay = messaging.Relay(world.settings, world.sessions, world.outbox)
    connection = await messaging.connect(world.settings)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await messaging.declare_exchange(channel, world.settings)
        assert await relay.publish_batch(exchange) == 1
        dlq = f"{world.settings.namespace}.broken.dlq"

        dead: list[Any] = []

        async def in_dlq() -> bool:
            q = await channel.get_queue(dlq, ensure=False)
            msg = await q.get(no_ack=True, fail=False)
            if msg is not None:
                dead.append(orjson.loads(msg.body))
            return bool(dead)

        await wait_until(in_dlq, timeout=30)
        assert dead[0]["event_type"] == Pinged.TYPE
    stop.set()
    await consumer
    assert attempts == messaging.DELIVERY_LIMIT + 1
    # Every failed attempt rolled back: no effect and no inbox record remain.
    assert await _count(world, world.effects) == 0
    assert await _count(world, world.inbox) == 0


def _db_lost() -> OperationalError:
    """What asyncmy raises through SQLAlchemy when MariaDB goes away mid-transaction."""
    return OperationalError("INSERT INTO inbox ...", {}, Exception(2013, "Lost connection"))


async def test_a_transient_failure_is_retried_past_the_delivery_limit(world: World) -> None:
    """A handler that fails with a lost database connection more times than the delivery limit
    allows, then succeeds: the event is applied once and nothing is dead-lettered."""
    fails = messaging.DELIVERY_LIMIT + 3
    attempts = 0

    async def flaky(session: AsyncSession, body: dict[str, Any]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= fails:
            raise _db_lost()
        await session.execute(insert(world.effects).values(event_id=body["event_id"]))

    settings = world.settings.model_copy(
        update={"event_retry_base_seconds": 0.01, "event_retry_max_seconds": 0.05}
    )
    stop = asyncio.Event()
    consumer = asyncio.create_task(
        messaging.consume(
            settings,
            world.sessions,
            world.inbox,
            queue="flaky",
            handlers={Pinged.routing_key(): flaky},
            stop=stop,
        )
    )
    await asyncio.sleep(1)
    await _emit(world, 1)
    relay = messaging.Relay(world.settings, world.sessions, world.outbox)
    connection = await messaging.connect(world.settings)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await messaging.declare_exchange(channel, world.settings)
        assert await relay.publish_batch(exchange) == 1
        await wait_until(lambda: _inbox_at_least(world, 1), timeout=30)
        await asyncio.sleep(0.5)
        dlq = await channel.declare_queue(f"{world.settings.namespace}.flaky.dlq", passive=True)
        assert dlq.declaration_result.message_count == 0
    stop.set()
    await consumer
    assert attempts == fails + 1
    assert await _count(world, world.effects) == 1
