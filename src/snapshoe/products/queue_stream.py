"""``GET /api/products/{id}/queue/me/events``: the buyer's ticket as Server-Sent Events.

``event: ticket`` with the ticket at once and on every change (state or position), a comment
line as a heartbeat when nothing was sent for HEARTBEAT_SECONDS, and the end once the ticket is
final. Woken by the process's hub (queue_hub.py): a move of the head needs no database read
(position = place - head) and goes out with the stream's next heartbeat wake, so a position is
at most HEARTBEAT_SECONDS old and costs no wake of its own; the queue's
end needs none either (a waiting place past the last admitted one is sold out); a change of the
ticket costs one primary-key read, bounded per process. A lost update heals with the hub's
periodic read for every stream of the process (REFRESH_SECONDS), not a read per stream.

The first frame carries ``retry``, the reconnection time a browser's EventSource waits after
a cut stream: spread at random, so that a crowd cut at once (a process restarted) comes back
over seconds instead of at one instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from fastapi.responses import StreamingResponse
from sqlalchemy.engine import RowMapping

from snapshoe.kernel.errors import not_found, service_unavailable
from snapshoe.products import queue_repository as qrepo
from snapshoe.products import schemas
from snapshoe.products.deps import Deps
from snapshoe.products.domain import FINAL_TICKET_STATES, TicketState
from snapshoe.products.queue_hub import Listener, told_key
from snapshoe.products.queue_tickets import ticket_out

HEARTBEAT_SECONDS = 15.0
RETRY_MS = (3000, 10000)  # the reconnection time each stream asks for, drawn in this range
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


async def _read(deps: Deps, pid: str, buyer: str) -> tuple[RowMapping | None, int]:
    async with deps.stream_reads, deps.sessions() as session:
        row = await qrepo.ticket_of(session, pid, buyer)
        queue = await qrepo.get_queue(session, pid)
    return row, int(queue["head"]) if queue is not None else 0


async def product_tickets(deps: Deps, pid: str) -> dict[str, RowMapping]:
    """The hub's one read for every stream of a product here (QueueHub.reader)."""
    async with deps.sessions() as session:
        rows = await qrepo.tickets_of_product(session, pid)
    return {row["id"]: row for row in rows}


async def ticket_events(deps: Deps, pid: str, buyer: str) -> StreamingResponse:
    row, head = await _read(deps, pid, buyer)
    if row is None:
        raise not_found("ticket")
    if deps.queue_hub.open_streams >= deps.settings.queue_max_streams:
        raise service_unavailable(
            "Too many live streams here; read GET /api/products/{id}/queue/me instead",
            code="too_many_streams",
            retry_after=5,
        )
    return StreamingResponse(
        _events(deps, pid, buyer, row, head), media_type="text/event-stream", headers=HEADERS
    )


def _frame(ticket: schemas.Ticket) -> bytes:
    return b"event: ticket\ndata: " + orjson.dumps(ticket.model_dump()) + b"\n\n"


def _after_end(row: Mapping[Any, Any], ended_after: int) -> Mapping[Any, Any] | None:
    """The ticket once its queue ended, if the end tells it: a waiting place past the last
    admitted one is sold out; a waiting one before it was admitted meanwhile (read it)."""
    if row["state"] != TicketState.WAITING:
        return row
    if row["place"] is not None and int(row["place"]) > ended_after:
        return {**row, "state": TicketState.SOLD_OUT}
    return None


async def _events(
    deps: Deps, pid: str, buyer: str, row: Mapping[Any, Any], head: int
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    hub = deps.queue_hub
    with hub.listen(pid, row["id"]) as listener:
        listener.known = told_key(row)
        last = ticket_out(deps, row, max(head, hub.head(pid)))
        retry = random.randint(*RETRY_MS)  # noqa: S311  (a spread, not a secret)
        yield b"retry: %d\n" % retry + _frame(last)
        sent_at = loop.time()
        while last.state not in FINAL_TICKET_STATES:
            wait = max(0.0, sent_at + HEARTBEAT_SECONDS - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.woken.wait(), wait)
            listener.woken.clear()
            row = _told(listener, row)
            if listener.reread:
                listener.reread = False
                found, head = await _read(deps, pid, buyer)
                row = found if found is not None else row
            listener.known = told_key(row)
            ticket = ticket_out(deps, row, max(head, hub.head(pid)))
            if ticket != last:
                last, sent_at = ticket, loop.time()
                yield _frame(ticket)
            elif loop.time() - sent_at >= HEARTBEAT_SECONDS - 0.05:
                sent_at = loop.time()
                yield b": heartbeat\n\n"


# A ticket only moves forward: waiting, admitted, then final. A row the hub read for everyone
# may be older than the stream's own read since; it never takes a ticket back.
_PROGRESS = {TicketState.WAITING: 0, TicketState.ADMITTED: 1}


def _told(listener: Listener, row: Mapping[Any, Any]) -> Mapping[Any, Any]:
    """The ticket as the hub told it: a row it read for everyone, or the queue's end (a
    waiting place past the last admitted one is sold out); where it cannot tell, read it."""
    handed, listener.row = listener.row, None
    if handed is not None and _PROGRESS.get(handed["state"], 2) >= _PROGRESS.get(row["state"], 2):
        row = handed
    if listener.ended_after is None:
        return row
    told = _after_end(row, listener.ended_after)
    listener.ended_after = None
    if told is None:
        listener.reread = True
        return row
    return told
