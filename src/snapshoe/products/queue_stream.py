"""``GET /api/products/{id}/queue/me/events``: the buyer's ticket as Server-Sent Events.

``event: ticket`` with the ticket at once and on every change (state or position), a comment
line as a heartbeat when nothing was sent for HEARTBEAT_SECONDS, and the end once the ticket is
final. Woken by the process's hub (queue_hub.py): a move of the head needs no database read
(position = place - head), a change of the ticket one primary-key read, bounded per process;
and every REREAD_SECONDS a stream reads its ticket anyway, so a lost update heals by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import orjson
from fastapi.responses import StreamingResponse
from sqlalchemy.engine import RowMapping

from snapshoe.kernel.errors import not_found, service_unavailable
from snapshoe.products import queue_repository as qrepo
from snapshoe.products import schemas
from snapshoe.products.deps import Deps
from snapshoe.products.domain import FINAL_TICKET_STATES
from snapshoe.products.queue_tickets import ticket_out

HEARTBEAT_SECONDS = 15.0
REREAD_SECONDS = 30.0
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


async def _read(deps: Deps, pid: str, buyer: str) -> tuple[RowMapping | None, int]:
    async with deps.stream_reads, deps.sessions() as session:
        row = await qrepo.ticket_of(session, pid, buyer)
        queue = await qrepo.get_queue(session, pid)
    return row, int(queue["head"]) if queue is not None else 0


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


async def _events(
    deps: Deps, pid: str, buyer: str, row: RowMapping, head: int
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    with deps.queue_hub.listen(pid, row["id"]) as listener:
        last = ticket_out(deps, row, head)
        yield _frame(last)
        sent_at = loop.time()
        # Spread the re-reads of a crowd that opened its streams in the same second.
        reread_at = loop.time() + REREAD_SECONDS * random.uniform(0.5, 1.0)  # noqa: S311
        while last.state not in FINAL_TICKET_STATES:
            wait = max(0.0, min(sent_at + HEARTBEAT_SECONDS, reread_at) - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.woken.wait(), wait)
            listener.woken.clear()
            if listener.reread or loop.time() >= reread_at:
                listener.reread, listener.head = False, None
                found, head = await _read(deps, pid, buyer)
                row = found if found is not None else row
                reread_at = loop.time() + REREAD_SECONDS
            elif listener.head is not None:
                head, listener.head = max(head, listener.head), None
            ticket = ticket_out(deps, row, head)
            if ticket != last:
                last = ticket
                yield _frame(ticket)
                sent_at = loop.time()
            elif loop.time() - sent_at >= HEARTBEAT_SECONDS - 0.05:
                yield b": heartbeat\n\n"
                sent_at = loop.time()
