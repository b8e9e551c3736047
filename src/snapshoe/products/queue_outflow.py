"""The waiting room's outflow: the release (rank the early tickets at random), then, over and
over, lapse the admissions past their deadline, admit the next buyers while pairs are left for
them, and end the queue when no pair can come back. The products worker runs it (run_outflow);
each step is one transaction holding the queue's row FOR UPDATE, so several workers never
admit the same buyer. The ledger is the only source of the pairs counted. docs/waiting-room.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.contracts.waiting_room import QueueAdmitted
from snapshoe.kernel.messaging import add_many_to_outbox
from snapshoe.products import draw_repository as drepo
from snapshoe.products import queue_repository as qrepo
from snapshoe.products.deps import Deps
from snapshoe.products.domain import (
    ADMISSION_SECONDS_DEFAULT,
    admissions_due,
    nothing_can_come_back,
)
from snapshoe.products.queue_hub import publish
from snapshoe.products.tables import outbox

log = logging.getLogger("snapshoe.products.queue")


@dataclass
class Step:
    """What one outflow step changed, for the live updates."""

    product_id: str
    ranked: int = 0
    admitted: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    ended: int = 0
    head: int = 0
    ended_now: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.ranked or self.admitted or self.expired or self.ended_now)


async def release(deps: Deps, pid: str, now: datetime) -> int:
    """Rank every ticket taken before the release, once; returns how many were ranked."""
    async with deps.sessions.begin() as session:
        queue = await qrepo.lock_queue(session, pid, shared=False)
        if queue is None or queue["state"] != "pre":
            return 0
        n = await qrepo.rank_unranked(session, pid)
        await qrepo.set_queue(
            session, pid, state="running", next_place=n + 1, head=0, released_at=now
        )
    log.info("queue %s released: %d tickets ranked at random", pid, n)
    return n


async def step(deps: Deps, pid: str, admission_seconds: int | None, now: datetime) -> Step:
    """One pass of the outflow over one released queue."""
    out = Step(pid)
    window = timedelta(seconds=admission_seconds or ADMISSION_SECONDS_DEFAULT)
    async with deps.sessions.begin() as session:
        queue = await qrepo.lock_queue(session, pid, shared=False)
        if queue is None or queue["state"] != "running":
            return out
        out.head = int(queue["head"])
        out.expired = await qrepo.expire_lapsed(session, pid, now)
        available, reserved, outstanding = await qrepo.stock_and_outstanding(session, pid, now)
        due = admissions_due(available, outstanding, await qrepo.waiting_ranked(session, pid))
        if due:
            rows = await qrepo.next_waiting(session, pid, due)
            out.admitted = [r["id"] for r in rows]
            await qrepo.admit(session, out.admitted, now, now + window)
            await announce_admitted(session, pid, rows, now + window)
            out.head = max(out.head, max(int(r["place"]) for r in rows))
            await qrepo.set_queue(session, pid, head=out.head)
        elif nothing_can_come_back(available, reserved, outstanding):
            out.ended = await qrepo.end_waiting(session, pid, now)
            await qrepo.set_queue(session, pid, state="ended", ended_at=now)
            out.ended_now = True
    if out.ended_now:
        log.info("queue %s ended: %d waiting tickets sold out", pid, out.ended)
    return out


async def announce_admitted(
    session: AsyncSession, pid: str, rows: list[Any], until: datetime
) -> None:
    """``queue.admitted`` per admitted ticket, in the step's transaction (the users service
    mails the buyer, who may have closed the page): none lost, none told twice."""
    name = await drepo.product_name(session, pid)
    events = [
        QueueAdmitted(
            ticket_id=r["id"],
            product_id=pid,
            product_name=name,
            buyer_id=r["buyer_id"],
            admitted_until=until,
        )
        for r in rows
    ]
    for start in range(0, len(events), 2000):
        await add_many_to_outbox(session, outbox, events[start : start + 2000])


async def tick(deps: Deps) -> list[Step]:
    """Release what is due, then one step over every running queue."""
    now = utcnow()
    async with deps.sessions() as session:
        due = await qrepo.queues_due(session, now)
    steps = []
    for q in due:
        ranked = await release(deps, q["product_id"], now) if q["state"] == "pre" else 0
        # The step's own time: an admission is stamped when it is made, not when the pass
        # began (a release of thousands of tickets takes a while before it).
        s = await step(deps, q["product_id"], q["admission_seconds"], utcnow())
        s.ranked = ranked
        steps.append(s)
        await tell(deps, s)
    return steps


async def tell(deps: Deps, s: Step) -> None:
    """The live streams of every process, after the step's commit (queue_hub.py)."""
    if not s.changed:
        return
    message: dict[str, Any] = {"p": s.product_id, "head": s.head}
    if s.admitted or s.expired:
        message["t"] = [*s.admitted, *s.expired]
    if s.ranked:
        message["all"] = True
    if s.ended_now:
        message["ended"] = True
    await publish(deps.redis, deps.settings.namespace, message)


async def run_outflow(deps: Deps, stop: asyncio.Event) -> None:
    """The outflow loop of the products worker, every ``queue_outflow_seconds``."""
    interval = deps.settings.queue_outflow_seconds
    while not stop.is_set():
        try:
            await tick(deps)
        except Exception:
            log.exception("queue outflow pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
