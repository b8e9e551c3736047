"""Measure the order lifecycle worker: how long it takes to advance N due orders (default
1,000,000), reported as transitions per second.

    uv run python -m snapshoe.bench.lifecycle [--orders 1000000] [--processes 1] [--concurrency 2]
        [--batch 4000] [--kind mix|expire|ship|deliver] [--keep]

It never touches dev or test data: everything happens in a dedicated database
(``<namespace>_orders`` with the namespace ``snapshoe_lcbench``), dropped and migrated first.
The orders are bulk-inserted server-side (``INSERT ... SELECT`` over MariaDB's sequence engine,
random 22-character ids like real ones, due times spread over the past hour), then the worker
(``snapshoe.orders.lifecycle.Lifecycle``, the same code ``snapshoe up`` runs) is started in
``--processes`` processes with ``--concurrency`` claiming loops each, all at once; the clock
stops when every process has found nothing due. Then it checks the outcome: nothing due
remains, every order moved exactly once (one new history row and one outbox event per order,
distinct event ids), and prints the EXPLAIN of the claim query.

The tests import :func:`fresh_database`, :func:`seed` and :func:`verify` from here, so the
10,000-order test and this benchmark load and check orders the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from snapshoe.kernel.db import create_engine, create_sessions, drop_database
from snapshoe.kernel.migrate import migrate_service
from snapshoe.kernel.settings import Settings
from snapshoe.orders.lifecycle import SHIP, STEPS, Lifecycle, due_query, update_sql

BENCH_NAMESPACE = "snapshoe_lcbench"
KINDS = {s.kind: s for s in STEPS}
CHUNK = 50_000


async def fresh_database(settings: Settings) -> None:
    """Drop and re-create ``<namespace>_orders`` at the latest migration."""
    await drop_database(settings, "orders")
    await migrate_service(settings, "orders")


async def seed(
    engine: AsyncEngine,
    n: int,
    *,
    kinds: tuple[str, ...] = ("ship",),
    start: int = 1,
    prefix: str = "",
    status: str | None = None,
    due_in_seconds: float = 0.0,
) -> None:
    """Insert ``n`` due orders (round-robin over ``kinds``: their steps' source states) with
    sequence numbers ``start..start+n-1``; ``status`` overrides the state (e.g. CANCELLED with
    a due time, which must never advance). Due times spread over the hour before
    ``now + due_in_seconds`` (by default: the past hour)."""
    states = (
        [("'" + status + "'", "'RELEASED'")]
        if status
        else [
            (
                f"'{KINDS[k].source.value}'",
                "'COMMITTED'" if KINDS[k].source.value != "PENDING_PAYMENT" else "'HELD'",
            )
            for k in kinds
        ]
    )
    status_sql = "ELT(1 + seq MOD {m}, {v})".format(
        m=len(states), v=", ".join(s for s, _ in states)
    )
    stock_sql = "ELT(1 + seq MOD {m}, {v})".format(m=len(states), v=", ".join(s for _, s in states))
    # Random-looking 22-char ids (like secrets.token_urlsafe(16)), so claims hit the clustered
    # index at random as in production, not in insertion order.
    sql = f"""
        INSERT INTO orders (id, buyer_id, idempotency_key, request_fingerprint, status,
            total_amount, from_cart, stock_state, payment_id, created_at, updated_at,
            expires_at, paid_at, next_transition_at)
        SELECT LEFT(REPLACE(REPLACE(TO_BASE64(UNHEX(MD5(CONCAT(:prefix, seq)))), '+', '-'),
                    '/', '_'), 22),
               CONCAT('bench-buyer-', seq MOD 50000), CONCAT(:prefix, 'k', seq),
               SHA2(CONCAT(:prefix, seq), 256), {status_sql}, 150000, 0, {stock_sql},
               CONCAT('pay-', seq), :t0, :t0, :t0, :t0,
               :t0 + INTERVAL :due SECOND
                   - INTERVAL FLOOR(3600000000 * (seq - :lo) / :n) MICROSECOND
        FROM seq_1_to_{start + n - 1} WHERE seq BETWEEN :lo AND :hi
    """
    t0 = datetime.now(UTC).replace(tzinfo=None)
    for lo in range(start, start + n, CHUNK):
        hi = min(lo + CHUNK - 1, start + n - 1)
        async with engine.begin() as conn:
            await conn.execute(
                text(sql),
                {"prefix": prefix, "t0": t0, "due": due_in_seconds, "lo": lo, "hi": hi, "n": n},
            )


async def verify(engine: AsyncEngine, expected: int) -> dict[str, Any]:
    """What the run left: due orders, history and outbox rows written by the worker, and
    whether any order moved twice or any event is duplicated."""
    queries = {
        "due": "SELECT COUNT(*) FROM orders WHERE next_transition_at <= UTC_TIMESTAMP(6) "
        "AND status IN ('PENDING_PAYMENT', 'PREPARING', 'SHIPPING')",
        "history": "SELECT COUNT(*) FROM order_history",
        "history_orders": "SELECT COUNT(DISTINCT order_id) FROM order_history",
        "history_duplicates": "SELECT COUNT(*) FROM (SELECT order_id, status FROM order_history "
        "GROUP BY order_id, status HAVING COUNT(*) > 1) d",
        "outbox": "SELECT COUNT(*) FROM outbox",
        "outbox_orders": "SELECT COUNT(DISTINCT JSON_VALUE(body, '$.order_id')) FROM outbox",
        "outbox_distinct_ids": "SELECT COUNT(DISTINCT event_id) FROM outbox",
    }
    async with engine.connect() as conn:
        out: dict[str, Any] = {
            k: int((await conn.execute(text(q))).scalar_one()) for k, q in queries.items()
        }
        rows = await conn.execute(text("SELECT status, COUNT(*) FROM orders GROUP BY status"))
        out["statuses"] = {s: int(c) for s, c in rows}
    out["ok"] = (
        out["due"] == 0
        and out["history"] == out["history_orders"] == expected
        and out["history_duplicates"] == 0
        and out["outbox"] == out["outbox_orders"] == out["outbox_distinct_ids"] == expected
    )
    return out


async def explain(engine: AsyncEngine) -> list[str]:
    """EXPLAIN of each step's claim query, as the worker sends it."""
    lines = []
    async with engine.connect() as conn:
        for step in STEPS:
            q = due_query(step, datetime.now(UTC), 1000)
            sql = str(q.compile(engine.sync_engine, compile_kwargs={"literal_binds": True}))
            row = (await conn.execute(text("EXPLAIN " + sql))).mappings().one()
            lines.append(
                f"{step.kind:8} type={row['type']} key={row['key']} key_len={row['key_len']} "
                f"rows={row['rows']} Extra={row['Extra']}"
            )
            lines.append(f"         {' '.join(sql.split())}")
        # The batch's UPDATE: the JSON array of claimed ids drives PRIMARY KEY lookups.
        now = datetime.now(UTC).replace(tzinfo=None)
        ids = '["a", "b"]'
        for row in (
            await conn.exec_driver_sql(
                "EXPLAIN " + update_sql(SHIP), (ids, "SHIPPING", now, now, "PREPARING")
            )
        ).mappings():
            lines.append(
                f"update   table={row['table']} type={row['type']} key={row['key']} "
                f"Extra={row['Extra']}"
            )
    return lines


async def child(args: argparse.Namespace) -> None:
    settings = Settings(namespace=BENCH_NAMESPACE)
    engine = create_engine(settings, "orders", pool_size=args.concurrency + 1)
    worker = Lifecycle(create_sessions(engine), stage_seconds=24 * 3600, batch_size=args.batch)
    # Each loop drains until it finds nothing due (rows locked by a sibling are skipped).
    await asyncio.gather(*(worker.drain() for _ in range(args.concurrency)))
    await engine.dispose()


async def prepare(
    settings: Settings, args: argparse.Namespace, kinds: tuple[str, ...]
) -> tuple[list[str], int]:
    """A fresh bench database seeded with the due orders; returns the claim query plans and
    the buffer pool size."""
    await fresh_database(settings)
    engine = create_async_engine(settings.database_url("orders"))
    started = time.perf_counter()
    await seed(engine, args.orders, kinds=kinds)
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE TABLE orders"))
        pool = int((await conn.execute(text("SELECT @@innodb_buffer_pool_size"))).scalar_one())
    print(
        f"seeded {args.orders} due orders ({'/'.join(kinds)}) in "
        f"{time.perf_counter() - started:.1f}s"
    )
    plan = await explain(engine)  # with every order due, as the worker meets them
    await engine.dispose()
    return plan, pool


async def check(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    engine = create_async_engine(settings.database_url("orders"))
    try:
        return await verify(engine, args.orders)
    finally:
        await engine.dispose()
        if not args.keep:
            await drop_database(settings, "orders")


def run_workers(args: argparse.Namespace) -> tuple[list[int], float]:
    """``--processes`` worker processes (this script with ``--child``); their exit codes and
    the time until the last one finished."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--concurrency",
        str(args.concurrency),
        "--batch",
        str(args.batch),
    ]
    started = time.perf_counter()
    procs = [subprocess.Popen(cmd) for _ in range(args.processes)]
    codes = [p.wait() for p in procs]
    return codes, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4000)
    parser.add_argument("--kind", default="mix", choices=["mix", *KINDS])
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*database doesn't exist")
    if args.child:
        asyncio.run(child(args))
        return

    settings = Settings(namespace=BENCH_NAMESPACE)
    kinds = tuple(KINDS) if args.kind == "mix" else (args.kind,)
    plan, pool = asyncio.run(prepare(settings, args, kinds))
    codes, elapsed = run_workers(args)
    result = asyncio.run(check(settings, args))
    print(f"machine: {platform.node()} {os.cpu_count()} cpu(s), {platform.platform()}")
    print(f"MariaDB {settings.db_host}:{settings.db_port}, buffer pool {pool >> 20} MiB")
    print(
        f"workers: {args.processes} process(es) x {args.concurrency} loop(s), "
        f"batch {args.batch}, kind {args.kind}, exit codes {codes}"
    )
    print(
        f"advanced {args.orders} orders in {elapsed:.1f}s -> "
        f"{args.orders / elapsed:,.0f} transitions/s"
    )
    print(f"check: {result}")
    print("claim query plans (every order due):")
    for line in plan:
        print("  " + line)
    sys.exit(0 if result["ok"] and not any(codes) else 1)


if __name__ == "__main__":
    main()
