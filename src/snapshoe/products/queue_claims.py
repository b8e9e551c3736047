"""The waiting room at the reserve path: a reservation of a queue-mode product uses the buyer's
admission (admitted -> used, one transaction) before the stock gate is asked, and gives it back
if the gate then refuses (sold out, limit) while it has time left. docs/waiting-room.md."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from snapshoe.kernel.clock import epoch_ms, utcnow
from snapshoe.kernel.errors import Problem
from snapshoe.products import admission_tokens, schemas
from snapshoe.products import queue_repository as qrepo
from snapshoe.products.deps import Deps
from snapshoe.products.queue_hub import publish

log = logging.getLogger("snapshoe.products.queue")


def admission_required(detail: str = "This drop sells through its waiting room") -> Problem:
    return Problem(403, "admission_required", detail=f"{detail}: order with your admission")


async def products_sold_by(deps: Deps, pids: Sequence[str], mode: str) -> list[str]:
    """The products among ``pids`` sold in sale mode ``mode`` (each read at most once a second
    per process: a mode can change only before its queue or draw has a buyer in it)."""
    out = []
    for pid in pids:

        async def load(pid: str = pid) -> str | None:
            async with deps.sessions() as session:
                return await qrepo.sale_mode(session, pid)

        if await deps.cache.get(("sale_mode", pid), load) == mode:
            out.append(pid)
    return out


async def queued_products(deps: Deps, pids: Sequence[str]) -> list[str]:
    """The products among ``pids`` sold in queue mode (docs/waiting-room.md)."""
    return await products_sold_by(deps, pids, "queue")


async def use_admission(deps: Deps, body: schemas.ReserveIn, pid: str) -> str:
    """Use the admission ``body`` carries for ``pid``; its ticket id, or 403."""
    now = utcnow()
    token = body.admission_token
    if not token:
        raise admission_required()
    admission = admission_tokens.verify(
        deps.admission_key, token, body.buyer_id, pid, epoch_ms(now)
    )
    if admission is None:
        raise admission_required("This admission is not valid for you, this drop or now")
    async with deps.sessions.begin() as session:
        used = await qrepo.use_admission(
            session, admission.ticket_id, body.buyer_id, pid, body.reservation_id, now
        )
    if not used:
        raise admission_required("This admission is used or has lapsed")
    await publish(deps.redis, deps.settings.namespace, {"p": pid, "t": [admission.ticket_id]})
    return admission.ticket_id


async def give_back(deps: Deps, pid: str, ticket_id: str, reservation_id: str) -> None:
    """After a refusal: the admission is the buyer's again, if it has time left."""
    try:
        async with deps.sessions.begin() as session:
            back = await qrepo.give_back_admission(session, ticket_id, reservation_id, utcnow())
        if back:
            await publish(deps.redis, deps.settings.namespace, {"p": pid, "t": [ticket_id]})
    except SQLAlchemyError as exc:
        # The ticket stays used; its pair was never taken, so the outflow admits the next.
        log.warning("could not give admission %s back: %s", ticket_id, exc)
