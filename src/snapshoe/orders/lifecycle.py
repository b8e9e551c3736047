"""The order lifecycle worker (issue 5): unpaid expiry and the stage-by-stage advance.

Each order row carries the time of its next automatic step, ``next_transition_at`` (indexed
with ``status``). A step is applied to a batch of due orders in ONE transaction:

1. ``SELECT id ... WHERE status = :from AND next_transition_at <= :now
   ORDER BY next_transition_at LIMIT :n FOR UPDATE SKIP LOCKED`` (a range of the
   ``(status, next_transition_at)`` index; rows another worker holds are skipped, not waited for);
2. one ``UPDATE`` of the claimed ids ``AND status = :from`` (the conditional transition; the row
   count must equal the batch, or the whole batch rolls back);
3. one ``INSERT ... SELECT`` of the history rows, one of the outbox events (bodies rendered
   by MariaDB from the contract's message template).

The claimed ids travel as one JSON array parameter per statement (``JSON_TABLE`` joined on the
primary key), so a batch costs the worker almost no Python work per row.

Nothing lives in memory between batches: a worker that dies mid-batch leaves an uncommitted
transaction the server rolls back, so its orders are still due and the next claim takes them.
Outbox event ids are derived from (order, event type): even a step applied twice by some future
bug could not publish twice (``UNIQUE(event_id)`` would refuse the batch).

Expiry does not call products: it records the ``RELEASING`` intent, which the orders worker's
settler carries out at products (idempotent there) exactly like a cancel or a declined payment.
A payment approval racing the expiry waits for the batch's row lock, then finds the order no
longer ``PENDING_PAYMENT`` and asks for a refund (:func:`handlers.on_payment_approved`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import and_, func, select
from sqlalchemy.exc import DBAPIError

from snapshoe.kernel import tracing
from snapshoe.kernel.clock import Clock, SystemClock, as_utc, to_db
from snapshoe.kernel.contracts import Event
from snapshoe.kernel.contracts.orders import OrderDelivered, OrderExpired, OrderShipped
from snapshoe.kernel.db import Sessions
from snapshoe.orders.domain import Status, StockState
from snapshoe.orders.tables import orders

log = logging.getLogger("snapshoe.orders.lifecycle")

# Event ids of lifecycle events are uuid5(this, "<order id>/<event type>").
EVENT_NAMESPACE = uuid.UUID("0b6f3c1e-5a53-4d0e-9a43-1f0c8f7e2a61")
_NS_BYTES = EVENT_NAMESPACE.bytes
_VARIANT = "89ab"  # RFC 4122 variant bits over the hash's two low bits


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # metric label
    source: Status
    target: Status
    event: type[Event]
    reason: str
    # The next step is due one stage later; None: the target is final.
    schedules_next: bool
    requires_stock: StockState | None = None
    sets_stock: StockState | None = None


EXPIRE = Step(
    "expire",
    Status.PENDING_PAYMENT,
    Status.EXPIRED,
    OrderExpired,
    "payment_timeout",
    schedules_next=False,
    sets_stock=StockState.RELEASING,
)
# A pair ships only once it is sold at products; an order whose commit is still pending waits.
SHIP = Step(
    "ship",
    Status.PREPARING,
    Status.SHIPPING,
    OrderShipped,
    "stage_elapsed",
    schedules_next=True,
    requires_stock=StockState.COMMITTED,
)
DELIVER = Step("deliver", Status.SHIPPING, Status.DELIVERED, OrderDelivered, "stage_elapsed", False)
STEPS: tuple[Step, ...] = (EXPIRE, SHIP, DELIVER)
SOURCES: tuple[Status, ...] = tuple(s.source for s in STEPS)

TRANSITIONS = Counter(
    "snapshoe_orders_lifecycle_transitions_total",
    "Orders moved by the lifecycle worker",
    ["kind"],
)
BATCH_SECONDS = Histogram(
    "snapshoe_orders_lifecycle_batch_seconds",
    "Time of one lifecycle batch transaction (claim, update, history, outbox, commit)",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAG_SECONDS = Gauge(
    "snapshoe_orders_lifecycle_lag_seconds",
    "How late the oldest due order of a status is (0: nothing overdue)",
    ["status"],
    multiprocess_mode="mostrecent",
)


class BatchConflict(RuntimeError):
    """The conditional update moved fewer rows than were claimed (cannot happen while the
    claim holds the row locks); the batch is rolled back rather than half-applied."""


def event_id(order_id: str, step: Step) -> str:
    """``str(uuid.uuid5(EVENT_NAMESPACE, f"{order_id}/{step.event.TYPE}"))``, computed directly
    from the SHA-1 (a third of the time: a million of these per benchmark run)."""
    h = hashlib.sha1(
        _NS_BYTES + f"{order_id}/{step.event.TYPE}".encode(), usedforsecurity=False
    ).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def due_query(step: Step, now: datetime, limit: int) -> Any:
    conditions = [orders.c.status == step.source, orders.c.next_transition_at <= to_db(now)]
    if step.requires_stock is not None:
        conditions.append(orders.c.stock_state == step.requires_stock)
    return (
        select(orders.c.id, orders.c.trace_parent)
        .where(and_(*conditions))
        .order_by(orders.c.next_transition_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


# The batch is passed to MariaDB once per statement as ONE JSON array parameter, joined
# through JSON_TABLE on the primary key: no per-row escaping or parameter compiling in Python
# (executemany of 2,000 rows per table was half of the worker's CPU in the profile).
# Multi-table UPDATE syntax because MariaDB 10.x does no semi-join for a single-table UPDATE
# with an IN (subquery).
_IDS = "JSON_TABLE(%s, '$[*]' COLUMNS (id VARCHAR(32) PATH '$')) AS b"
_IDS_EIDS = (
    "JSON_TABLE(%s, '$[*]' COLUMNS (id VARCHAR(32) PATH '$[0]', eid CHAR(36) PATH '$[1]')) AS b"
)
# Statements below are assembled from constants only (S608: no input in the text).
_HISTORY_SQL = (
    "INSERT INTO order_history (order_id, status, reason, at) "  # noqa: S608
    f"SELECT o.id, %s, %s, %s FROM {_IDS} JOIN orders AS o ON o.id = b.id"
)
# The body is the contract's own message for the step (a template rendered by the event model,
# so the contract stays in Python) with the per-order fields set by MariaDB.
_OUTBOX_SQL = (
    "INSERT INTO outbox (event_id, routing_key, body, created_at, trace_headers) "  # noqa: S608
    "SELECT b.eid, %s, JSON_SET(%s, '$.event_id', b.eid, '$.order_id', o.id, "
    f"'$.buyer_id', o.buyer_id), %s, %s FROM {_IDS_EIDS} JOIN orders AS o ON o.id = b.id"
)


def update_sql(step: Step) -> str:
    sets = "o.status = %s, o.updated_at = %s, o.next_transition_at = %s"
    if step.sets_stock is not None:
        sets += ", o.stock_state = %s"
    return f"UPDATE {_IDS} JOIN orders AS o ON o.id = b.id SET {sets} WHERE o.status = %s"  # noqa: S608


def message_template(step: Step, now: datetime) -> str:
    """The step's event message (JSON) with empty per-order fields."""
    blank = {"order_id": "", "buyer_id": "", "event_id": "", "occurred_at": now}
    return orjson.dumps(step.event.model_validate(blank).to_message()).decode()


async def advance(
    sessions: Sessions, step: Step, *, now: datetime, stage_seconds: float, limit: int
) -> int:
    """Apply ``step`` to at most ``limit`` due orders in one transaction; returns how many."""
    started = time.perf_counter()
    async with sessions.begin() as session:
        rows = (await session.execute(due_query(step, now, limit))).all()
        if not rows:
            return 0
        ids = [r[0] for r in rows]
        with _batch_span(step, [r[1] for r in rows]):
            await _move(await session.connection(), step, ids, now, stage_seconds)
    TRANSITIONS.labels(step.kind).inc(len(ids))
    BATCH_SECONDS.labels(step.kind).observe(time.perf_counter() - started)
    return len(ids)


async def _move(conn: Any, step: Step, ids: list[str], now: datetime, stage_seconds: float) -> None:
    """The claimed orders' update, history rows and events (three statements)."""
    at = to_db(now)
    batch = orjson.dumps(ids).decode()
    nxt = to_db(now + timedelta(seconds=stage_seconds)) if step.schedules_next else None
    params: tuple[Any, ...] = (step.target.value, at, nxt)
    if step.sets_stock is not None:
        params += (step.sets_stock.value,)
    result = await conn.exec_driver_sql(update_sql(step), (batch, *params, step.source.value))
    if result.rowcount != len(ids):
        raise BatchConflict(f"{step.kind}: claimed {len(ids)}, moved {result.rowcount}")
    await conn.exec_driver_sql(_HISTORY_SQL, (step.target.value, step.reason, at, batch))
    pairs = orjson.dumps([(oid, event_id(oid, step)) for oid in ids]).decode()
    carried = tracing.carrier() if tracing.enabled() else None
    headers = orjson.dumps(carried).decode() if carried else None
    await conn.exec_driver_sql(
        _OUTBOX_SQL, (step.event.routing_key(), message_template(step, now), at, headers, pairs)
    )


def _batch_span(step: Step, parents: list[str | None]) -> contextlib.AbstractContextManager[Any]:
    """With tracing on, a span for the batch, linked to the request that placed each order
    (at most 128 links, the SDK's default limit); its events carry it to their consumers."""
    if not tracing.enabled():
        return contextlib.nullcontext()
    links = [link for p in parents[:128] if (link := tracing.link_to(p)) is not None]
    return tracing.tracer.start_as_current_span(
        f"lifecycle {step.kind}", links=links, attributes={"snapshoe.orders": len(parents)}
    )


@dataclass(frozen=True, slots=True)
class DueStatus:
    status: Status
    due: int
    oldest_due_at: datetime | None

    def lag_seconds(self, now: datetime) -> float:
        if self.oldest_due_at is None:
            return 0.0
        return max(0.0, (now - self.oldest_due_at).total_seconds())


async def due_status(sessions: Sessions, now: datetime, *, count: bool = True) -> list[DueStatus]:
    """Per source status: how many orders are due and when the oldest was due. Each query is
    a range of the (status, next_transition_at) index (``count=False``: MIN only, O(1))."""
    out = []
    async with sessions() as session:
        for status in SOURCES:
            due = and_(orders.c.status == status, orders.c.next_transition_at <= to_db(now))
            oldest = (
                await session.execute(select(func.min(orders.c.next_transition_at)).where(due))
            ).scalar_one()
            n = (
                int((await session.execute(select(func.count()).where(due))).scalar_one())
                if count and oldest is not None
                else 0
            )
            out.append(DueStatus(status, n, None if oldest is None else as_utc(oldest)))
    return out


@dataclass
class Lifecycle:
    """The worker: ``run(stop)`` until stopped; ``tick()`` / ``drain()`` for tests and tools."""

    sessions: Sessions
    stage_seconds: float
    clock: Clock = field(default_factory=SystemClock)
    batch_size: int = 1000
    poll_seconds: float = 0.5
    concurrency: int = 1
    lag_every_seconds: float = 1.0
    applied: dict[str, int] = field(default_factory=lambda: {s.kind: 0 for s in STEPS})
    _lag_at: float = 0.0

    async def tick(self) -> int:
        """One batch of each step (expiry first: it gives pairs back to waiting buyers)."""
        total = 0
        for step in STEPS:
            n = await advance(
                self.sessions,
                step,
                now=self.clock.now(),
                stage_seconds=self.stage_seconds,
                limit=self.batch_size,
            )
            self.applied[step.kind] += n
            total += n
        return total

    async def drain(self) -> int:
        """Tick until nothing is due; returns how many steps were applied."""
        total = 0
        while n := await self.tick():
            total += n
        return total

    async def update_lag(self) -> None:
        now = self.clock.now()
        for d in await due_status(self.sessions, now, count=False):
            LAG_SECONDS.labels(d.status.value).set(d.lag_seconds(now))

    async def _loop(self, stop: asyncio.Event, first: bool) -> None:
        backoff = self.poll_seconds
        while not stop.is_set():
            try:
                if first and time.monotonic() - self._lag_at >= self.lag_every_seconds:
                    self._lag_at = time.monotonic()
                    await self.update_lag()
                if await self.tick():
                    backoff = self.poll_seconds
                    continue  # more may be due: no pause while there is a backlog
                delay = self.poll_seconds
            except (DBAPIError, OSError, BatchConflict):
                # Deadlock, lost connection, server restart: the batch rolled back, retry.
                log.exception("lifecycle batch failed; retrying in %.1fs", backoff)
                delay = backoff
                backoff = min(backoff * 2, 10.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._loop(stop, n == 0) for n in range(self.concurrency)))
