"""The transactional outbox and the inbox: their tables, writing events in the change's
transaction, and pruning old rows (see ``kernel.messaging``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel import tracing
from snapshoe.kernel.contracts.events import Event
from snapshoe.kernel.contracts.internal_operations import OutboxFigures
from snapshoe.kernel.db import Sessions
from snapshoe.kernel.settings import Settings
from snapshoe.kernel.transient import sleep_or_stop

log = logging.getLogger("snapshoe.messaging")

UNROUTABLE = "unroutable"
# How often a worker prunes old outbox/inbox rows, and how many rows one DELETE takes (short
# transactions: a prune never holds locks the relay or a consumer waits for).
PRUNE_INTERVAL_SECONDS = 300.0
PRUNE_BATCH = 1000


def messaging_tables(metadata: MetaData) -> tuple[Table, Table]:
    """Define ``outbox`` and ``inbox`` on a service's metadata (its migration creates them)."""
    outbox = Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("routing_key", String(120), nullable=False),
        Column("body", JSON, nullable=False),
        Column("created_at", DateTime(timezone=False), nullable=False),
        Column("published_at", DateTime(timezone=False), nullable=True),
        Column("attempts", Integer, nullable=False, server_default="0"),
        # Why the last publish did not happen ('unroutable'), and when to try it again.
        Column("last_error", String(200), nullable=True),
        Column("retry_at", DateTime(timezone=False), nullable=True),
        # The trace context and request id of the transaction that wrote the event (W3C
        # traceparent, x-request-id): the relay publishes them as message headers.
        Column("trace_headers", JSON, nullable=True),
        Index("ix_outbox_unpublished", "published_at", "id"),
    )
    inbox = Table(
        "inbox",
        metadata,
        Column("consumer", String(120), primary_key=True),
        Column("event_id", String(36), primary_key=True),
        Column("processed_at", DateTime(timezone=False), nullable=False),
        Index("ix_inbox_processed_at", "processed_at"),
    )
    return outbox, inbox


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


async def add_to_outbox(session: AsyncSession, outbox: Table, event: Event) -> None:
    await session.execute(
        insert(outbox).values(
            event_id=event.event_id,
            routing_key=event.routing_key(),
            body=event.to_message(),
            created_at=_now(),
            trace_headers=tracing.carrier() or None,
        )
    )


async def add_many_to_outbox(
    session: AsyncSession,
    outbox: Table,
    events: Sequence[Event],
    trace_headers: Sequence[dict[str, str] | None] | None = None,
) -> None:
    """``trace_headers``: each event's own context, when the events come from different
    requests (a group commit); by default the current context, for all."""
    now = _now()
    shared = tracing.carrier() or None
    headers = trace_headers if trace_headers is not None else [shared] * len(events)
    await session.execute(
        insert(outbox),
        [
            {
                "event_id": e.event_id,
                "routing_key": e.routing_key(),
                "body": e.to_message(),
                "created_at": now,
                "trace_headers": h,
            }
            for e, h in zip(events, headers, strict=True)
        ],
    )


async def prune(
    sessions: Sessions,
    *,
    outbox: Table | None,
    inbox: Table | None,
    older_than: timedelta,
    batch: int = PRUNE_BATCH,
    now: datetime | None = None,
) -> tuple[int, int]:
    """Delete published outbox rows and processed inbox rows older than ``older_than``, one
    short transaction per ``batch`` rows. Unpublished rows are never deleted. Returns the
    (outbox, inbox) rows deleted."""
    cutoff = (now or _now()) - older_than
    counts = [0, 0]
    for i, (table, column) in enumerate(((outbox, "published_at"), (inbox, "processed_at"))):
        if table is None:
            continue
        col = table.c[column]
        while True:
            async with sessions.begin() as session:
                result = await session.execute(
                    delete(table)
                    .where(col.is_not(None), col < cutoff)
                    .with_dialect_options(mysql_limit=batch)
                )
            n = int(getattr(result, "rowcount", 0) or 0)
            counts[i] += n
            if n < batch:
                break
    return counts[0], counts[1]


async def run_pruner(
    settings: Settings,
    sessions: Sessions,
    stop: asyncio.Event,
    *,
    outbox: Table | None,
    inbox: Table | None,
    interval: float = PRUNE_INTERVAL_SECONDS,
) -> None:
    """The retention step of a service's worker: prune, then wait ``interval``. Any number may
    run (each DELETE takes whatever rows are old; two pruners just share the work)."""
    older = timedelta(days=settings.event_retention_days)
    while not stop.is_set():
        try:
            deleted = await prune(sessions, outbox=outbox, inbox=inbox, older_than=older)
            if any(deleted):
                log.info(
                    "pruned %d outbox and %d inbox rows older than %s",
                    *deleted,
                    older,
                )
        except Exception:
            log.exception("outbox/inbox prune failed")
        await sleep_or_stop(stop, interval)


async def unroutable_count(sessions: Sessions, outbox: Table) -> int:
    """Unpublished outbox rows the broker returned as unroutable (a gauge of /metrics)."""
    o = outbox
    async with sessions() as session:
        q = (
            select(func.count())
            .select_from(o)
            .where(o.c.published_at.is_(None), o.c.last_error == UNROUTABLE)
        )
        return int((await session.execute(q)).scalar_one())


async def backlog(sessions: Sessions, outbox: Table) -> OutboxFigures:
    """Unpublished outbox rows and how long the oldest has waited: the operator's "outbox
    backlog" (GET /api/admin/operations). ``ix_outbox_unpublished`` holds exactly these rows,
    so this reads the backlog, not the table."""
    o = outbox
    async with sessions() as session:
        q = select(func.count(), func.min(o.c.created_at)).where(o.c.published_at.is_(None))
        count, oldest = (await session.execute(q)).one()
    age = None if oldest is None else max(0.0, (_now() - oldest).total_seconds())
    return OutboxFigures(backlog=int(count), oldest_age_seconds=age)
