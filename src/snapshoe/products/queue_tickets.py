"""The waiting room's buyer side: take a ticket, read it; and the operators' figures.

A join before the release draws a random ``lottery`` number and takes no place: the release
ranks those tickets by it (queue_outflow.release). A join after the release takes the next
place, in arrival order. docs/waiting-room.md."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from snapshoe.kernel.clients import UpstreamProblem, UpstreamUnavailable
from snapshoe.kernel.clock import as_utc, epoch_ms, rfc3339, utcnow
from snapshoe.kernel.errors import Problem, not_found, service_unavailable
from snapshoe.products import admission_tokens, schemas
from snapshoe.products import queue_repository as qrepo
from snapshoe.products import repository as repo
from snapshoe.products.deps import Deps
from snapshoe.products.domain import LOTTERY_BITS, TicketState, new_id, position
from snapshoe.products.queue_outflow import release

JOIN_ATTEMPTS = 3


def _ts(value: datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None


def ticket_out(deps: Deps, row: Mapping[Any, Any], head: int) -> schemas.Ticket:
    token = None
    if row["state"] == TicketState.ADMITTED and row["admitted_until"] is not None:
        token = admission_tokens.sign(
            deps.admission_key,
            row["id"],
            row["buyer_id"],
            row["product_id"],
            epoch_ms(row["admitted_until"]),
        )
    return schemas.Ticket(
        id=row["id"],
        product_id=row["product_id"],
        state=row["state"],
        position=position(row["state"], row["place"], head),
        joined_at=rfc3339(row["joined_at"]),
        admitted_at=_ts(row["admitted_at"]),
        admitted_until=_ts(row["admitted_until"]),
        admission_token=token,
    )


async def _queue_product(deps: Deps, pid: str, *, fresh: bool = False) -> Mapping[Any, Any]:
    """The product's queue times: read at most once a second per process (a crowd joins in the
    same seconds); ``fresh`` before acting on them once (the release)."""

    async def load() -> Mapping[Any, Any] | None:
        async with deps.sessions() as session:
            return await repo.get_product(session, pid)

    product = await load() if fresh else await deps.cache.get(("queue_product", pid), load)
    if product is None:
        raise not_found("product")
    if product["sale_mode"] != "queue":
        raise Problem(409, "not_queued", detail="This product is not sold through a queue")
    return product


async def join(deps: Deps, pid: str, buyer: str) -> tuple[schemas.Ticket, bool]:
    """The buyer's ticket, and whether this call took it (201) or found it (200). The common
    case is one transaction: take the ticket; a buyer who has one meets the unique key."""
    product = await _queue_product(deps, pid)
    now = utcnow()
    expect = "running" if now >= product["release_at"] else "pre"
    if now < product["queue_opens_at"]:
        raise Problem(
            409,
            "queue_not_open",
            detail="The queue has not opened yet",
            queue_opens_at=rfc3339(product["queue_opens_at"]),
        )
    await _old_enough(deps, buyer, product["queue_opens_at"])
    async with deps.join_slots:
        return await _join(deps, pid, buyer, expect, product["release_at"])


async def _join(
    deps: Deps, pid: str, buyer: str, expect: str, release_at: datetime
) -> tuple[schemas.Ticket, bool]:
    for _ in range(JOIN_ATTEMPTS):
        try:
            taken = await _take(deps, pid, buyer, ranked=expect == "running", release_at=release_at)
        except IntegrityError:
            return await _found(deps, pid, buyer), False
        if isinstance(taken, schemas.Ticket):
            return taken, True
        if taken == "ended":
            return await _found(deps, pid, buyer, or_sold_out=True), False
        if taken == "due" or (taken == "pre" and expect == "running"):
            fresh = await _queue_product(deps, pid, fresh=True)
            release_at = fresh["release_at"]
            taken = "pre"
            if utcnow() >= release_at:
                await release(deps, pid, utcnow())  # due: rank first, then join behind
                taken = "running"
        expect = taken
    raise Problem(409, "conflict", detail="The queue changed while joining; try again")


async def _found(deps: Deps, pid: str, buyer: str, *, or_sold_out: bool = False) -> schemas.Ticket:
    """The buyer's ticket taken before; with ``or_sold_out``, none means the queue ended."""
    async with deps.sessions() as session:
        mine = await qrepo.ticket_of(session, pid, buyer)
        queue = await qrepo.get_queue(session, pid) if mine is not None else None
    if mine is not None:
        return ticket_out(deps, mine, queue["head"] if queue else 0)
    if or_sold_out:
        raise Problem(409, "sold_out", detail="Every pair of this drop is sold")
    raise Problem(409, "conflict", detail="The queue changed while joining; try again")


async def _old_enough(deps: Deps, buyer: str, opens_at: datetime) -> None:
    """The minimum account age at the queue's opening, if the shop set one."""
    min_age = deps.settings.queue_min_account_age_seconds
    if not min_age:
        return
    try:
        account = await deps.users.account(buyer)
    except UpstreamProblem as exc:
        raise Problem(403, "account_too_new", detail="No such account") from exc
    except UpstreamUnavailable as exc:
        raise service_unavailable("Accounts cannot be checked right now") from exc
    if as_utc(account.created_at) > opens_at - timedelta(seconds=min_age):
        raise Problem(
            403,
            "account_too_new",
            detail="This drop's waiting room takes accounts made before its queue opened",
        )


async def _take(
    deps: Deps, pid: str, buyer: str, *, ranked: bool, release_at: datetime
) -> schemas.Ticket | str:
    """The ticket, in one transaction holding the queue's row (SHARE before the release, FOR
    UPDATE after it); else the queue's state when it is not the one expected ("ended" for no
    queue), or "due" for a ticket that would be taken at or after ``release_at`` before the
    release ran: it queues behind the shuffled ones, so the release must run first. A buyer
    with a ticket already raises IntegrityError (one per buyer and product)."""
    async with deps.sessions.begin() as session:
        queue = await qrepo.lock_queue(session, pid, shared=not ranked)
        state = "ended" if queue is None else str(queue["state"])
        if queue is None or state != ("running" if ranked else "pre"):
            return state
        values: dict[str, Any] = {
            "id": new_id(),
            "product_id": pid,
            "buyer_id": buyer,
            "state": TicketState.WAITING.value,
            "joined_at": utcnow(),
        }
        if ranked:
            # Arrival order is the order the queue's row was taken in: the time is read there.
            values["place"] = await qrepo.take_place(session, pid)
            values["joined_at"] = utcnow()
        elif values["joined_at"] >= release_at:
            # Decided before waiting for a join slot and the row, the join came in late: a
            # lottery ticket now would be shuffled in among the early ones (bench queue saw it).
            return "due"
        else:
            values["lottery"] = secrets.randbits(LOTTERY_BITS)
        await qrepo.insert_ticket(session, values)
    row = {"place": None, "admitted_at": None, "admitted_until": None, **values}
    return ticket_out(deps, row, int(queue["head"]))


async def my_ticket(deps: Deps, pid: str, buyer: str) -> schemas.Ticket:
    async with deps.sessions() as session:
        mine = await qrepo.ticket_of(session, pid, buyer)
        queue = await qrepo.get_queue(session, pid) if mine is not None else None
    if mine is None:
        raise not_found("ticket")
    return ticket_out(deps, mine, queue["head"] if queue else 0)


async def figures(deps: Deps, pid: str) -> schemas.QueueFigures:
    now = utcnow()
    async with deps.sessions() as session:
        queue = await qrepo.get_queue(session, pid)
        if queue is None:
            if await repo.get_product(session, pid) is None:
                raise not_found("product")
            raise Problem(409, "not_queued", detail="This product is not sold through a queue")
        counts = await qrepo.count_states(session, pid)
        recent = await qrepo.admitted_since(session, pid, now - timedelta(minutes=1))
    return schemas.QueueFigures(
        **{s.value: counts.get(s.value, 0) for s in TicketState},
        admitted_last_minute=recent,
        state=queue["state"],
        head=queue["head"],
    )
