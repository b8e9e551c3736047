"""Issue 12 item 16 against the real RabbitMQ and MariaDB: an event no queue is bound to stays
unpublished, visible and counted (it is not dropped by the broker and marked published); old
published outbox rows and processed inbox rows are pruned, recent and unpublished ones kept."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from sqlalchemy import func, insert, select, update
from tests.integration.kernel.test_messaging import World, world  # noqa: F401

from snapshoe.kernel import messaging
from snapshoe.kernel.contracts import Event


class NobodyListens(Event):
    TYPE: ClassVar[str] = "test.nobody_listens"
    n: int = 0


class Announcement(Event):
    TYPE: ClassVar[str] = "test.announced"
    MUST_ROUTE: ClassVar[bool] = False
    n: int = 0


async def _rows(w: World) -> dict[str, tuple[object, object, int]]:
    o = w.outbox
    async with w.sessions() as session:
        rows = await session.execute(
            select(o.c.routing_key, o.c.published_at, o.c.last_error, o.c.attempts)
        )
        return {r.routing_key: (r.published_at, r.last_error, r.attempts) for r in rows}


async def test_an_unroutable_event_stays_unpublished_and_is_counted(world: World) -> None:  # noqa: F811
    async with world.sessions.begin() as session:
        await messaging.add_to_outbox(session, world.outbox, NobodyListens())
        await messaging.add_to_outbox(session, world.outbox, Announcement())
    before = messaging.UNROUTABLE_EVENTS.labels(NobodyListens.routing_key())._value.get()
    relay = messaging.Relay(world.settings, world.sessions, world.outbox)
    connection = await messaging.connect(world.settings)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await messaging.declare_exchange(channel, world.settings)
        assert await relay.publish_batch(exchange) == 2
        rows = await _rows(world)
        published_at, last_error, attempts = rows[NobodyListens.routing_key()]
        assert published_at is None  # kept, not dropped and marked published
        assert last_error == messaging.UNROUTABLE
        assert attempts == 1
        # An announcement (MUST_ROUTE False) with no queue is published and dropped, by design.
        assert rows[Announcement.routing_key()][0] is not None
        assert relay.published == 1
        assert relay.unroutable == 1
        after = messaging.UNROUTABLE_EVENTS.labels(NobodyListens.routing_key())._value.get()
        assert after == before + 1
        assert await messaging.unroutable_count(world.sessions, world.outbox) == 1

        # Not retried before its retry_at: the relay's next batches don't spin on it.
        assert await relay.publish_batch(exchange) == 0

        # A queue is bound later (its consumer deployed after the publisher); once due, the
        # event is published and reaches it.
        q = await channel.declare_queue(f"{world.settings.namespace}.pings", durable=True)
        await q.bind(exchange, routing_key=NobodyListens.routing_key())
        o = world.outbox
        async with world.sessions.begin() as session:
            await session.execute(update(o).values(retry_at=messaging._now()))
        assert await relay.publish_batch(exchange) == 1
        published_at, last_error, _ = (await _rows(world))[NobodyListens.routing_key()]
        assert published_at is not None
        assert last_error is None
        msg = await q.get(no_ack=True, timeout=5)
        assert msg is not None
        assert msg.type == NobodyListens.TYPE
        assert await messaging.unroutable_count(world.sessions, world.outbox) == 0


async def test_prune_deletes_old_published_and_processed_rows_only(world: World) -> None:  # noqa: F811
    now = messaging._now()
    old = now - timedelta(days=8)
    recent = now - timedelta(days=6)
    o, i = world.outbox, world.inbox

    def outbox_row(n: int, created: object, published: object) -> dict[str, object]:
        return {
            "event_id": f"ev-{n}",
            "routing_key": "test.pinged.v1",
            "body": {"n": n},
            "created_at": created,
            "published_at": published,
        }

    async with world.sessions.begin() as session:
        # 2,500 old published rows (three prune batches of 1,000), 3 recent, 4 old unpublished.
        await session.execute(insert(o), [outbox_row(n, old, old) for n in range(2500)])
        await session.execute(insert(o), [outbox_row(10_000 + n, recent, recent) for n in range(3)])
        await session.execute(insert(o), [outbox_row(20_000 + n, old, None) for n in range(4)])
        await session.execute(
            insert(i),
            [{"consumer": "c", "event_id": f"old-{n}", "processed_at": old} for n in range(1200)]
            + [{"consumer": "c", "event_id": f"new-{n}", "processed_at": recent} for n in range(5)],
        )

    deleted = await messaging.prune(
        world.sessions, outbox=o, inbox=i, older_than=timedelta(days=7), batch=1000
    )
    assert deleted == (2500, 1200)
    async with world.sessions() as session:
        left = (
            await session.execute(
                select(o.c.published_at.is_(None), func.count()).group_by(
                    o.c.published_at.is_(None)
                )
            )
        ).all()
        kept_inbox = (await session.execute(select(i.c.event_id))).scalars().all()
    assert {bool(unpublished): n for unpublished, n in left} == {False: 3, True: 4}
    assert sorted(kept_inbox) == sorted(f"new-{n}" for n in range(5))
