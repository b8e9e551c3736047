"""Background loops of the orders service: the outbox relay, the payment-event consumer,
the stock settler (commit/release intents carried out at products, retried until done) and the
lifecycle worker (unpaid expiry, PREPARING -> SHIPPING -> DELIVERED; see ``lifecycle.py``).

Any number of worker processes may run: the relay and the lifecycle worker claim rows with
SKIP LOCKED, the consumer shares a queue, and settling is idempotent at products and
conditional here. ``run_lifecycle`` runs the lifecycle worker alone
(``snapshoe orders lifecycle --run``), for a deployment that scales it apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import start_http_server

from snapshoe.kernel.clock import Clock, SystemClock, rfc3339
from snapshoe.kernel.db import Sessions, create_engine, create_sessions
from snapshoe.kernel.messaging import Relay, run_pruner
from snapshoe.kernel.settings import Settings, settings_for
from snapshoe.orders import stock
from snapshoe.orders.bootstrap import build_deps, close_deps
from snapshoe.orders.consumers import run_payment_consumer
from snapshoe.orders.deps import Deps
from snapshoe.orders.lifecycle import Lifecycle, due_status
from snapshoe.orders.settings import LifecycleSettings, OrdersSettings
from snapshoe.orders.tables import inbox, outbox

log = logging.getLogger("snapshoe.orders.worker")

SETTLE_POLL_SECONDS = 0.2
SETTLE_MAX_BACKOFF_SECONDS = 5.0


async def run_settler(deps: Deps, stop: asyncio.Event) -> None:
    delay = SETTLE_POLL_SECONDS
    while not stop.is_set():
        try:
            found, settled = await stock.settle_stock(deps)
            # Back off while products cannot settle what is pending; poll fast otherwise.
            failing = found > settled
            delay = min(delay * 2, SETTLE_MAX_BACKOFF_SECONDS) if failing else SETTLE_POLL_SECONDS
            if found and not failing:
                continue
        except Exception:
            log.exception("stock settler failed")
            delay = min(delay * 2, SETTLE_MAX_BACKOFF_SECONDS)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


def lifecycle_worker(
    settings: OrdersSettings,
    sessions: Sessions,
    lifecycle: LifecycleSettings | None = None,
    clock: Clock | None = None,
) -> Lifecycle:
    lc = lifecycle or LifecycleSettings()
    worker = Lifecycle(
        sessions,
        stage_seconds=settings.order_stage_seconds,
        batch_size=lc.batch_size,
        poll_seconds=lc.poll_seconds,
        concurrency=lc.concurrency,
    )
    if clock is not None:
        worker.clock = clock
    return worker


def serve_metrics(settings: Settings, lifecycle: LifecycleSettings) -> None:
    """The worker has no HTTP app: its metrics get their own small endpoint, if a port is set."""
    if lifecycle.metrics_port:
        start_http_server(lifecycle.metrics_port, addr=settings.host)
        log.info("worker metrics on %s:%d/metrics", settings.host, lifecycle.metrics_port)


async def run_lifecycle(shared: Settings, stop: asyncio.Event) -> None:
    """The lifecycle worker alone: only a database connection pool, nothing else."""
    settings = settings_for(OrdersSettings, shared)
    lc = LifecycleSettings()
    serve_metrics(settings, lc)
    engine = create_engine(settings, "orders", pool_size=lc.concurrency + 1)
    try:
        await lifecycle_worker(settings, create_sessions(engine), lc).run(stop)
    finally:
        await engine.dispose()


async def lifecycle_status(settings: Settings, clock: Clock | None = None) -> str:
    """``snapshoe orders lifecycle --status``: due orders per status, the oldest one's lag."""
    engine = create_engine(settings, "orders", pool_size=1)
    try:
        now = (clock or SystemClock()).now()
        rows = await due_status(create_sessions(engine), now)
    finally:
        await engine.dispose()
    lines = [f"{'status':<16} {'due':>9}  {'oldest due at':<27} {'lag':>10}"]
    for d in rows:
        oldest = "-" if d.oldest_due_at is None else rfc3339(d.oldest_due_at)
        lines.append(f"{d.status:<16} {d.due:>9}  {oldest:<27} {d.lag_seconds(now):>9.1f}s")
    return "\n".join(lines)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    lc = LifecycleSettings()
    serve_metrics(settings, lc)
    deps = build_deps(settings)
    try:
        await asyncio.gather(
            Relay(settings, deps.sessions, outbox).run(stop),
            run_payment_consumer(deps, stop),
            run_settler(deps, stop),
            lifecycle_worker(deps.settings, deps.sessions, lc).run(stop),
            run_pruner(settings, deps.sessions, stop, outbox=outbox, inbox=inbox),
        )
    finally:
        await close_deps(deps)
