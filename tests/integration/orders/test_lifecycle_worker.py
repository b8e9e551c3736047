"""The lifecycle worker against a real MariaDB, in a database of its own
(``<test namespace>lc_orders``: the bulk orders here never mix with the platform's).

Several workers over 10,000 due orders at once, a worker SIGKILLed in the middle of a batch
and restarted, final states that never advance, time jumped with an injected clock, the
``--status`` command and the worker's metrics endpoint.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.support.platform import ROOT, TEST_ENV, make_test_settings

from snapshoe.bench.lifecycle import fresh_database, seed, verify
from snapshoe.kernel.clock import ManualClock
from snapshoe.kernel.db import create_engine, create_sessions, drop_database
from snapshoe.kernel.settings import Settings
from snapshoe.orders.lifecycle import STEPS, TRANSITIONS, Lifecycle, event_id

STAGE = 24 * 3600.0


@pytest.fixture(scope="module")
def lc_settings() -> Settings:
    return make_test_settings(namespace=f"{TEST_ENV['SNAPSHOE_NAMESPACE']}lc")


@pytest.fixture
async def db(lc_settings: Settings) -> AsyncIterator[AsyncEngine]:
    """A freshly migrated, empty orders database for one test."""
    await fresh_database(lc_settings)
    engine = create_engine(lc_settings, "orders", pool_size=8)
    try:
        yield engine
    finally:
        await engine.dispose()
        await drop_database(lc_settings, "orders")


def _worker(engine: AsyncEngine, clock: ManualClock | None = None, batch: int = 250) -> Lifecycle:
    lc = Lifecycle(create_sessions(engine), stage_seconds=STAGE, batch_size=batch)
    if clock is not None:
        lc.clock = clock
    return lc


async def _scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one()


@pytest.mark.parametrize("workers", [2, 4])
async def test_workers_advance_10000_due_orders_exactly_once(db: AsyncEngine, workers: int) -> None:
    n = 10_000
    await seed(db, n, kinds=("expire", "ship", "deliver"))
    before = {k: TRANSITIONS.labels(k)._value.get() for k in ("expire", "ship", "deliver")}
    pool = [_worker(db) for _ in range(workers)]
    # All at once, each on its own connection, each claiming batches of 250.
    done = await asyncio.gather(*(w.drain() for w in pool))
    assert sum(done) == n
    assert sum(1 for d in done if d) >= 2, done  # they really shared the work
    result = await verify(db, n)
    assert result["ok"], result
    assert result["statuses"] == {"EXPIRED": 3333, "SHIPPING": 3334, "DELIVERED": 3333}
    # Expired orders ask for their pairs back (the settler's RELEASING intent), once each.
    assert await _scalar(db, "SELECT COUNT(*) FROM orders WHERE stock_state = 'RELEASING'") == 3333
    async with db.connect() as conn:
        rows = await conn.execute(
            text("SELECT routing_key, COUNT(*) FROM outbox GROUP BY routing_key")
        )
        events = {rk: int(c) for rk, c in rows}
    assert events == {
        "order.expired.v1": 3333,
        "order.shipped.v1": 3334,
        "order.delivered.v1": 3333,
    }
    # MariaDB rendered the event bodies: each is the contract's message for its order.
    async with db.connect() as conn:
        sample = (
            await conn.execute(
                text(
                    "SELECT x.event_id, x.routing_key, x.body, o.id, o.buyer_id, o.status "
                    "FROM outbox x JOIN orders o ON o.id = JSON_VALUE(x.body, '$.order_id') "
                    "ORDER BY RAND() LIMIT 300"
                )
            )
        ).all()
    by_target = {s.target.value: s for s in STEPS}
    for eid, routing_key, body, oid, buyer, status in sample:
        step = by_target[status]
        message = orjson.loads(body)
        assert eid == message["event_id"] == event_id(oid, step)
        assert routing_key == step.event.routing_key()
        assert (
            message
            == step.event(
                order_id=oid, buyer_id=buyer, event_id=eid, occurred_at=message["occurred_at"]
            ).to_message()
        )
    after = {k: TRANSITIONS.labels(k)._value.get() for k in before}
    assert {k: after[k] - before[k] for k in before} == {
        "expire": 3333,
        "ship": 3334,
        "deliver": 3333,
    }


async def test_final_states_never_advance(db: AsyncEngine) -> None:
    # Final orders with a (stale) due time, as a bug or a manual edit might leave them.
    for k, status in enumerate(("CANCELLED", "PAYMENT_FAILED", "EXPIRED", "DELIVERED")):
        await seed(db, 50, start=1 + 1000 * k, prefix=status, status=status)
    clock = ManualClock(datetime.now(UTC) + timedelta(days=30))
    assert await _worker(db, clock).drain() == 0
    assert await _scalar(db, "SELECT COUNT(*) FROM order_history") == 0
    assert await _scalar(db, "SELECT COUNT(*) FROM outbox") == 0
    assert await _scalar(db, "SELECT COUNT(*) FROM orders WHERE updated_at > created_at") == 0


async def test_injected_clock_drives_each_stage_one_stage_apart(db: AsyncEngine) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0)
    # Paid orders due at t0 (+ some PREPARING whose stock commit is still pending).
    await seed(db, 30, kinds=("ship",), due_in_seconds=0)
    await seed(db, 5, start=100, prefix="p", kinds=("ship",), due_in_seconds=0)
    async with db.begin() as conn:
        await conn.execute(
            text("UPDATE orders SET next_transition_at = :t, stock_state = 'COMMITTED'"),
            {"t": t0.replace(tzinfo=None)},
        )
        await conn.execute(
            text("UPDATE orders SET stock_state = 'COMMITTING' WHERE idempotency_key LIKE 'pk%'")
        )
    clock = ManualClock(t0 - timedelta(seconds=1))
    worker = _worker(db, clock)
    assert await worker.drain() == 0  # not due yet
    clock.set(t0)
    assert await worker.drain() == 30  # the 5 still committing wait for their stock
    clock.advance(STAGE - 1)
    assert await worker.drain() == 0
    clock.advance(1)
    assert await worker.drain() == 30
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT order_id, status, at FROM order_history ORDER BY order_id, id")
            )
        ).all()
    by_order: dict[str, list[tuple[str, datetime]]] = {}
    for oid, status, at in rows:
        by_order.setdefault(oid, []).append((status, at))
    assert len(by_order) == 30
    for steps in by_order.values():
        assert [s for s, _ in steps] == ["SHIPPING", "DELIVERED"]
        assert (steps[1][1] - steps[0][1]).total_seconds() == STAGE
        assert steps[0][1] == t0.replace(tzinfo=None)
    # The committing ones ship once their commit settles.
    async with db.begin() as conn:
        await conn.execute(text("UPDATE orders SET stock_state = 'COMMITTED'"))
    assert await worker.drain() == 5


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **TEST_ENV,
        "SNAPSHOE_NAMESPACE": settings.namespace,
        "SNAPSHOE_LOG_JSON": "false",
        **extra,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _rows_held(engine: AsyncEngine) -> int:
    """1 if the (frozen) worker holds a batch open: the worker claims the oldest due rows of a
    status, so one of them can't be locked without waiting."""
    for status in ("PENDING_PAYMENT", "PREPARING", "SHIPPING"):
        async with engine.connect() as conn:
            try:
                await conn.execute(
                    text(
                        "SELECT id FROM orders WHERE status = :s AND next_transition_at <= "
                        "UTC_TIMESTAMP(6) ORDER BY next_transition_at LIMIT 1 FOR UPDATE NOWAIT"
                    ),
                    {"s": status},
                )
            except OperationalError:  # lock wait refused: the worker holds that row
                return 1
            finally:
                await conn.rollback()
    return 0


async def test_sigkill_mid_batch_then_restart_skips_and_repeats_nothing(
    db: AsyncEngine, lc_settings: Settings
) -> None:
    # Enough orders that the worker is still busy (~8 s at ~15,000/s) when the test looks for
    # an open batch: with 30,000 a fast run could finish before the first look (seen in CI).
    n = 120_000
    await seed(db, n, kinds=("expire", "ship", "deliver"))
    cmd = [sys.executable, "-m", "snapshoe.cli", "orders", "lifecycle", "--run"]
    env = _env(lc_settings, SNAPSHOE_ORDERS_LIFECYCLE_BATCH_SIZE="500")
    first = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        # Let it commit some batches, then kill it while it holds one open.
        await asyncio.sleep(0.5)
        while await _scalar(db, "SELECT COUNT(*) FROM order_history") < 2_000:
            await asyncio.sleep(0.01)
        # Freeze the worker, look whether it holds a batch open, and kill it only then: a
        # frozen process can't race the look (polling a running one missed its short
        # transactions on a loaded CI machine).
        held = 0
        deadline = time.monotonic() + 60
        while not held and time.monotonic() < deadline and first.poll() is None:
            first.send_signal(signal.SIGSTOP)
            held = await _rows_held(db)
            if not held:
                first.send_signal(signal.SIGCONT)
                await asyncio.sleep(0.003)
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    assert held > 0
    # The server rolls the open batch back: what is committed is whole batches, each complete.
    await asyncio.sleep(0.5)
    history = await _scalar(db, "SELECT COUNT(*) FROM order_history")
    outbox = await _scalar(db, "SELECT COUNT(*) FROM outbox")
    assert history == outbox
    assert 0 < history < n
    assert history % 500 == 0  # whole batches of 500 only, never a part of one

    port = _free_port()
    second = subprocess.Popen(
        cmd,
        env={**env, "SNAPSHOE_ORDERS_LIFECYCLE_METRICS_PORT": str(port)},
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while (await verify(db, n))["due"] and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        async with httpx.AsyncClient(timeout=5) as c:
            metrics = (await c.get(f"http://127.0.0.1:{port}/metrics")).text
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0
    finally:
        if second.poll() is None:
            second.kill()
    result = await verify(db, n)
    assert result["ok"], result
    # The restarted worker did exactly what the killed one had not committed.
    applied = sum(
        float(v)
        for v in re.findall(
            r'^snapshoe_orders_lifecycle_transitions_total\{kind="\w+"\} ([\d.e+]+)$',
            metrics,
            re.M,
        )
    )
    assert applied == n - history
    assert "snapshoe_orders_lifecycle_batch_seconds_count" in metrics
    assert re.search(
        r'^snapshoe_orders_lifecycle_lag_seconds\{status="PREPARING"\} ', metrics, re.M
    )


async def test_status_command_shows_due_counts_and_lag(
    db: AsyncEngine, lc_settings: Settings
) -> None:
    await seed(db, 40, kinds=("ship",), due_in_seconds=-600)  # due 10 min .. 70 min ago
    await seed(db, 7, start=100, prefix="e", kinds=("expire",), due_in_seconds=7200)  # future
    out = subprocess.run(
        [sys.executable, "-m", "snapshoe.cli", "orders", "lifecycle", "--status"],
        env=_env(lc_settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:]}
    assert set(lines) == {"PENDING_PAYMENT", "PREPARING", "SHIPPING"}
    assert lines["PENDING_PAYMENT"][1:3] == ["0", "-"]
    assert lines["SHIPPING"][1] == "0"
    assert lines["PREPARING"][1] == "40"
    lag = float(lines["PREPARING"][3].rstrip("s"))
    assert 3600 + 600 - 120 < lag < 3600 + 600 + 120
