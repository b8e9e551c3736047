"""The operator's glance (GET /api/admin/operations, routed by the gateway to orders) against
the real platform: every figure with the command that fixes it; an unpublished outbox row
written into products' and payments' databases shows in their backlog, a dead-lettered event
in its queue's DLQ depth, and a gate counter changed behind the ledger's back as drift (until
reconcile repairs it). Only an admin may read it."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tests.integration.orders.helpers import OrdersEnv, admin_headers, assert_problem
from tests.support.waiting import eventually

PATH = "/api/admin/operations"
# Bound to no queue: the relay keeps it unpublished (unroutable), so it stays in the backlog.
UNROUTABLE_KEY = "test.operations.nobody_listens"


async def _figures(c: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    r = await c.get(PATH, headers=admin)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.fixture
async def payments_db(orders_env: OrdersEnv) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(
        orders_env.settings.database_url("payments"), poolclass=pool.NullPool
    )
    try:
        yield engine
    finally:
        await engine.dispose()


async def _stale_outbox_row(engine: AsyncEngine) -> str:
    """An event written an hour ago and never published; its event id."""
    event_id = secrets.token_hex(16)
    at = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outbox (event_id, routing_key, body, created_at, attempts)"
                " VALUES (:e, :k, :b, :at, 0)"
            ),
            {"e": event_id, "k": UNROUTABLE_KEY, "b": "{}", "at": at},
        )
    return event_id


async def _drop_outbox_row(engine: AsyncEngine, event_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM outbox WHERE event_id = :e"), {"e": event_id})


async def test_every_figure_has_its_fix(orders_env: OrdersEnv) -> None:
    async with orders_env.client() as c:
        ops = await _figures(c, admin_headers(orders_env.settings))
    assert set(ops["outbox"]) == {"orders", "products", "payments"}
    for service, fig in ops["outbox"].items():
        assert fig["status"] == "ok", fig
        assert isinstance(fig["backlog"], int)
        assert fig["fix"] == f"snapshoe worker {service}"
    dead = ops["dead_letters"]
    assert dead["status"] == "ok"
    assert dead["fix"] == "snapshoe events dlq replay --all"
    assert dead["inspect"] == "snapshoe events dlq list"
    assert {q["queue"] for q in dead["queues"]} >= {"orders.payments", "payments.refunds"}
    for q in dead["queues"]:
        assert q["fix"] == f"snapshoe events dlq replay --queue {q['queue']} --all"
    assert dead["total"] == sum(q["messages"] for q in dead["queues"])
    drift = ops["gate_drift"]
    assert drift["status"] == "ok"
    assert drift["built"] is True
    assert drift["fix"] == "snapshoe products reconcile"


async def test_a_stale_outbox_row_shows_in_its_services_backlog(
    orders_env: OrdersEnv, payments_db: AsyncEngine
) -> None:
    env = orders_env
    admin = admin_headers(env.settings)
    rows = [
        ("products", env.products_db, await _stale_outbox_row(env.products_db)),
        ("payments", payments_db, await _stale_outbox_row(payments_db)),
        ("orders", env.orders_db, await _stale_outbox_row(env.orders_db)),
    ]
    try:
        async with env.client() as c:
            ops = await _figures(c, admin)
        for service, _, _ in rows:
            fig = ops["outbox"][service]
            assert fig["backlog"] >= 1, fig
            assert fig["oldest_age_seconds"] >= 3600, fig
    finally:
        for _, engine, event_id in rows:
            await _drop_outbox_row(engine, event_id)


async def test_a_dead_lettered_event_shows_in_its_queues_depth(orders_env: OrdersEnv) -> None:
    env = orders_env
    admin = admin_headers(env.settings)
    dlq = f"{env.settings.namespace}.orders.payments.dlq"
    async with env.client() as c:
        before = {
            q["queue"]: q["messages"] for q in (await _figures(c, admin))["dead_letters"]["queues"]
        }
        connection = await aio_pika.connect(env.settings.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            # As the broker dead-letters a rejected delivery: onto the DLQ, kept there.
            message_id = secrets.token_hex(8)
            await channel.default_exchange.publish(
                aio_pika.Message(b"{}", message_id=message_id, type="payment.approved"),
                routing_key=dlq,
            )
            try:
                ops = await eventually(
                    lambda: _figures(c, admin),
                    lambda o: (
                        {q["queue"]: q["messages"] for q in o["dead_letters"]["queues"]}[
                            "orders.payments"
                        ]
                        == before.get("orders.payments", 0) + 1
                    ),
                )
                assert ops["dead_letters"]["total"] >= 1
            finally:
                queue = await channel.declare_queue(dlq, passive=True)
                while (got := await queue.get(no_ack=False, fail=False)) is not None:
                    if got.message_id == message_id:
                        await got.ack()
                        break
                    await got.nack(requeue=True)


async def test_a_gate_counter_off_the_ledger_is_drift_until_reconcile(
    orders_env: OrdersEnv,
) -> None:
    env = orders_env
    admin = admin_headers(env.settings)
    r_client = aioredis.Redis.from_url(env.settings.redis_url, decode_responses=True)
    try:
        async with env.client() as c:
            product, (item,) = await env.drop(c, [4], name="Drift")
            avail = f"{env.settings.namespace}:pgate:{{{product['id']}}}:avail"
            assert await r_client.hget(avail, item["id"]) == "4"
            await r_client.hset(avail, item["id"], "7")  # the gate says 7, the ledger 4
            ops = await _figures(c, admin)
            assert ops["gate_drift"]["items"] >= 1, ops["gate_drift"]
            assert ops["gate_drift"]["differences"] >= 1
            # The fix the figure names (the CLI runs the same reconcile).
            async with httpx.AsyncClient(base_url=env.platform.url("products"), timeout=30) as p:
                r = await p.post("/internal/gate/reconcile", headers=env.internal)
                assert r.status_code == 200, r.text
            assert await r_client.hget(avail, item["id"]) == "4"
            ops = await _figures(c, admin)
            assert ops["gate_drift"]["items"] == 0, ops["gate_drift"]
    finally:
        await r_client.aclose()


async def test_only_an_admin_reads_the_operations_figures(orders_env: OrdersEnv) -> None:
    async with orders_env.client() as c:
        assert_problem(await c.get(PATH), 401)
        assert_problem(await c.get(PATH, headers=orders_env.buyer().auth), 403, "forbidden")
