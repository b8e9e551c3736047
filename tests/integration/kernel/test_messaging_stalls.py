"""The outbox relay when the broker stops answering (no confirm, a robust channel waiting for its
connection): the batch is given up after ``publish_timeout``, its rows stay unpublished and
unlocked, and the next batch publishes them. Runs against real MariaDB; the stalled exchange is
a stand-in, so the shared RabbitMQ is not disturbed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import func, select
from tests.integration.kernel.test_messaging import World, _emit, world  # noqa: F401

from snapshoe.kernel import messaging


class StalledExchange:
    """Accepts publishes and never confirms them, as a broker that went away mid-batch."""

    def __init__(self) -> None:
        self.attempts = 0

    async def publish(self, *_: Any, **__: Any) -> None:
        self.attempts += 1
        await asyncio.Event().wait()


class RecordingExchange:
    def __init__(self) -> None:
        self.ids: list[str] = []

    async def publish(self, message: Any, **_: Any) -> None:
        self.ids.append(message.message_id)


async def _unpublished(w: World) -> int:
    o = w.outbox
    async with w.sessions() as session:
        q = select(func.count()).select_from(o).where(o.c.published_at.is_(None))
        return int((await session.execute(q)).scalar_one())


async def test_a_stalled_publish_gives_the_batch_back(world: World) -> None:  # noqa: F811
    ids = await _emit(world, 5)
    relay = messaging.Relay(world.settings, world.sessions, world.outbox, publish_timeout=0.5)
    stalled = StalledExchange()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await relay.publish_batch(stalled)  # type: ignore[arg-type]
    assert time.monotonic() - started < 5
    assert stalled.attempts == 5
    assert await _unpublished(world) == 5
    assert relay.published == 0

    # The rows were unlocked by the rollback: a healthy exchange publishes all of them now.
    healthy = RecordingExchange()
    assert await relay.publish_batch(healthy) == 5  # type: ignore[arg-type]
    assert sorted(healthy.ids) == sorted(ids)
    assert await _unpublished(world) == 0
