"""The waiting room under a crowd, on the real stack: what a crowd of joins may hold in a
products process (docs/waiting-room.md, "Holding the crowd")."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from sqlalchemy import text
from tests.integration.orders.helpers import OrdersEnv
from tests.integration.orders.test_waiting_room import join, places, queue_drop
from tests.support.waiting import eventually


async def test_joins_waiting_for_the_queue_cannot_starve_the_process_of_connections(
    orders_env: OrdersEnv,
) -> None:
    """40 joins after the release wait for the queue's row, held here as a long release holds
    it. Without a bound on joins at once they took every pooled connection of the process (10
    + 20) and its other routes waited the pool's 30 s for one (in bench queue at 20,000
    buyers: the reserve path, 25 s and 500s). With it, a ticket read answers while they wait,
    and every join completes once the row is free."""
    async with orders_env.client() as client:
        product, _ = await queue_drop(orders_env, client, 5, release_in=timedelta(seconds=2))
        pid = product["id"]
        first = orders_env.buyer()
        assert (await join(client, pid, first)).status_code == 201
        await eventually(lambda: places(orders_env, pid), lambda p: None not in p.values())
        late = [orders_env.buyer() for _ in range(40)]
        async with orders_env.products_db.connect() as conn:
            held = await conn.begin()
            await conn.execute(
                text("SELECT * FROM queues WHERE product_id = :p FOR UPDATE"), {"p": pid}
            )
            joins = [asyncio.create_task(join(client, pid, b)) for b in late]
            await asyncio.sleep(3)  # every join has reached the row's lock
            started = time.monotonic()
            r = await client.get(f"/api/products/{pid}/queue/me", headers=first.auth)
            waited = time.monotonic() - started
            assert not any(j.done() for j in joins)  # they are still waiting for the row
            await held.rollback()
        assert r.status_code == 200, r.text
        assert waited < 15, waited  # not the pool's 30 s
        answers = await asyncio.gather(*joins)
        assert [a.status_code for a in answers] == [201] * 40
        after = await places(orders_env, pid)
        assert sorted(after[b.id] for b in late) == list(range(2, 42))
