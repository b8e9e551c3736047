"""Dead letters against the real RabbitMQ and MariaDB: a poison message reaches the DLQ after
the delivery limit; the DLQ depth gauge reads it from the broker; ``snapshoe events dlq list``
shows it without consuming it; ``replay`` puts it back on its queue, where a fixed consumer
applies it, and the DLQ is empty afterwards."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession
from tests.integration.kernel.test_messaging import (  # noqa: F401
    Pinged,
    World,
    _count,
    _emit,
    _inbox_at_least,
    world,
)
from tests.support.platform import ROOT, TEST_ENV
from tests.support.waiting import wait_until

from snapshoe.kernel import deadletters, messaging


async def _cli(w: World, *args: str) -> tuple[int, str]:
    env = {**os.environ, **TEST_ENV, "SNAPSHOE_NAMESPACE": w.settings.namespace}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "snapshoe.cli",
        "events",
        "dlq",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode()


async def _depth(w: World) -> float:
    gauges = deadletters.EventGauges(w.settings, "kernel", ["broken"], ttl=0)
    await gauges.refresh()
    return float(deadletters.DLQ_DEPTH.labels(f"{w.settings.namespace}.broken.dlq")._value.get())


async def test_poison_dead_letters_then_list_and_replay(world: World) -> None:  # noqa: F811
    fixed = False
    attempts = 0

    async def handler(session: AsyncSession, body: dict[str, Any]) -> None:
        nonlocal attempts
        attempts += 1
        if not fixed:
            raise KeyError("a bug: poison, not transient")
        await session.execute(insert(world.effects).values(event_id=body["event_id"]))

    def consumer(stop: asyncio.Event) -> asyncio.Task[None]:
        return asyncio.create_task(
            messaging.consume(
                world.settings,
                world.sessions,
                world.inbox,
                queue="broken",
                handlers={Pinged.routing_key(): handler},
                stop=stop,
            )
        )

    stop = asyncio.Event()
    task = consumer(stop)
    await asyncio.sleep(1)
    [event_id] = await _emit(world, 1)
    relay = messaging.Relay(world.settings, world.sessions, world.outbox)
    connection = await messaging.connect(world.settings)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await messaging.declare_exchange(channel, world.settings)
        assert await relay.publish_batch(exchange) == 1

    async def dead() -> bool:
        return await _depth(world) == 1

    await wait_until(dead, timeout=30)
    stop.set()
    await task
    assert attempts == messaging.DELIVERY_LIMIT + 1

    # list shows it, twice in a row: listing consumes nothing.
    for _ in range(2):
        code, out = await _cli(world, "list", "--queue", "broken")
        assert code == 0, out
        assert f"id={event_id}" in out, out
        assert f"type={Pinged.TYPE}" in out, out
        assert "delivery_limit" in out, out  # why it died, from the x-death headers
        assert '"event_type":"test.pinged"' in out, out  # the body's first bytes
        assert "1 dead-lettered event(s)" in out, out
    assert await _depth(world) == 1

    # An id that is not there: nothing replayed, non-zero exit, the message stays.
    code, out = await _cli(world, "replay", "--queue", "broken", "--id", "no-such-id")
    assert code == 1, out
    assert await _depth(world) == 1

    # The bug is fixed; the replay puts the event back on its queue and out of the DLQ.
    fixed = True
    code, out = await _cli(world, "replay", "--queue", "broken", "--id", event_id)
    assert code == 0, out
    assert f"replayed {event_id}" in out, out
    assert await _depth(world) == 0
    stop = asyncio.Event()
    task = consumer(stop)
    await wait_until(lambda: _inbox_at_least(world, 1), timeout=30)
    stop.set()
    await task
    assert await _count(world, world.effects) == 1
    assert await _depth(world) == 0
