"""The draw's worker: at ``draw_at`` rank every entry from the seed and reveal it; then, over
and over, decide the charged entries from the ledger, charge the next entrants in rank order
while pairs are left for them, and settle the draw when no pair can go to anyone else. The
products worker runs it (run_draws). docs/draws.md.

Exactly once across crashes: each step is one transaction holding the draw's row FOR UPDATE;
an entrant is drawn for a charge by writing the order id its order and charge will carry,
before either is asked for. Orders places that order idempotently by its id, payments charges
an order at most once (one payment per order, the PG's Idempotency-Key derived from it), so a
worker that dies anywhere asks again, under the same ids, for what it cannot see finished.
The outcome is read from the ledger, never from an answer: a reservation COMMITTED (the
order was paid) is a win, RELEASED (declined, expired, failed) passes the pair on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel.clients import UpstreamProblem, UpstreamUnavailable
from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.contracts.draws import DrawEntryDecided
from snapshoe.kernel.draw_ranking import rank
from snapshoe.kernel.messaging import add_many_to_outbox
from snapshoe.products import draw_repository as drepo
from snapshoe.products.deps import Deps
from snapshoe.products.domain import DECIDED_ENTRY_STATES, EntryState, charges_due
from snapshoe.products.tables import outbox

log = logging.getLogger("snapshoe.products.draws")

# Charges asked for again in one pass (those not seen finished for draw_resend_seconds).
RESEND_BATCH = 200


@dataclass
class Step:
    """What one pass changed: the charges to ask for, and the entries decided."""

    product_id: str
    ranked: int = 0
    charge: list[dict[str, Any]] = field(default_factory=list)
    decided: list[str] = field(default_factory=list)
    settled: bool = False


async def draw(deps: Deps, pid: str, now: datetime) -> int:
    """Rank the entries and reveal the seed, once; returns how many entries were ranked."""
    async with deps.sessions.begin() as session:
        row = await drepo.lock_draw(session, pid)
        if row is None or row["state"] != "open":
            return 0
        entries = await drepo.entries_to_rank(session, pid)
        ranking = rank(row["seed"], entries)
        await drepo.set_ranks(
            session,
            [(eid, place) for order in ranking.values() for place, eid in enumerate(order, 1)],
        )
        await drepo.set_draw(session, pid, state="drawn", drawn_at=now)
    log.info("draw %s: %d entries ranked, seed revealed", pid, len(entries))
    return len(entries)


async def step(deps: Deps, pid: str, now: datetime) -> Step:
    """Decide what the ledger settled, then draw the next entrants for the pairs left."""
    out = Step(pid)
    async with deps.sessions.begin() as session:
        row = await drepo.lock_draw(session, pid)
        if row is None or row["state"] != "drawn":
            return out
        decided = await drepo.settle_charging(session, pid, now)
        out.decided = [eid for ids in decided.values() for eid in ids]
        open_sizes = 0
        for size in await drepo.sizes(session, pid):
            due = charges_due(int(size["available"]), int(size["unplaced"]), int(size["waiting"]))
            if due:
                picked = await drepo.next_ranked(session, pid, size["item_id"], due)
                orders = [(r["id"], secrets.token_urlsafe(16)) for r in picked]
                await drepo.start_charges(session, orders, now)
                out.charge += [{"id": e, "order_id": o} for e, o in orders]
            # A size is done when nothing is being charged and either nobody waits or no
            # pair is on sale or held (so none can come back to anyone).
            waiting = size["waiting"] and (size["available"] or size["reserved"])
            if size["charging"] or due or waiting:
                open_sizes += 1
        if not open_sizes:
            lost = await drepo.lose_the_rest(session, pid, now)
            out.decided += lost
            await drepo.set_draw(session, pid, state="settled", settled_at=now)
            out.settled = True
        await tell(session, pid, row, out.decided)
        if out.charge:
            ids = [c["id"] for c in out.charge]
            out.charge = [dict(r) for r in await drepo.decided_entries(session, ids)]
    if out.settled:
        log.info("draw %s settled", pid)
    return out


async def resend(deps: Deps, pid: str, now: datetime) -> list[dict[str, Any]]:
    """Charges not seen finished for ``draw_resend_seconds``: asked for again (same ids)."""
    since = now - timedelta(seconds=deps.settings.draw_resend_seconds)
    async with deps.sessions.begin() as session:
        rows = await drepo.charges_to_send(session, pid, since, RESEND_BATCH)
        await drepo.touch_sent(session, [r["id"] for r in rows], now)
    return [dict(r) for r in rows]


async def charge(deps: Deps, entry: dict[str, Any], name: str) -> None:
    """Place the entrant's order, then charge it through their billing key. Failures are left
    for :func:`resend`: both calls are idempotent by the order id."""
    oid = entry["order_id"]
    try:
        order = await deps.orders.create_draw_order(oid, entry["buyer_id"], entry["item_id"])
    except UpstreamProblem as exc:
        if exc.code in ("sold_out", "purchase_limit_exceeded"):
            # No reservation was written: the entrant waits again at their rank (a limit
            # reached by an order of their own elsewhere is theirs: they lose this pair).
            async with deps.sessions.begin() as session:
                draw_row = await drepo.lock_draw(session, entry["product_id"])
                if exc.code == "sold_out" or draw_row is None:
                    await drepo.back_to_entered(session, entry["id"], utcnow())
                else:
                    await drepo.update_entry(
                        session,
                        entry["id"],
                        state=EntryState.PAYMENT_FAILED,
                        decided_at=utcnow(),
                        updated_at=utcnow(),
                    )
                    await tell(session, entry["product_id"], draw_row, [entry["id"]])
            return
        log.warning("draw order %s refused: %s %s", oid, exc.status, exc.code)
        return
    except UpstreamUnavailable as exc:
        log.info("draw order %s postponed: %s", oid, exc)
        return
    if order.status != "PENDING_PAYMENT":
        return  # paid, failed or expired already: the ledger tells the outcome
    try:
        await deps.payments.charge(oid, entry["billing_key"], entry["buyer_id"], name)
    except (UpstreamProblem, UpstreamUnavailable) as exc:
        log.info("draw charge %s postponed: %s", oid, exc)


@dataclass
class Charger:
    """The charges this worker has under way: each in a task of its own (at most
    ``draw_charge_concurrency`` calling out at once), so the passes go on deciding what the
    ledger settled while the PG answers; an entry already under way here is not asked twice."""

    deps: Deps
    flying: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.deps.settings.draw_charge_concurrency)

    def ask(self, entries: list[dict[str, Any]], name: str) -> None:
        for entry in entries:
            eid = entry["id"]
            if eid in self.flying:
                continue
            task = asyncio.create_task(self._one(entry, name), name=f"draw-charge-{eid}")
            self.flying[eid] = task
            task.add_done_callback(functools.partial(self._done, eid))

    def _done(self, eid: str, _: asyncio.Task[None]) -> None:
        self.flying.pop(eid, None)

    async def _one(self, entry: dict[str, Any], name: str) -> None:
        async with self.slots:
            try:
                await charge(self.deps, entry, name)
            except Exception:
                log.exception("draw charge of entry %s failed", entry["id"])

    async def drain(self) -> None:
        if self.flying:
            await asyncio.gather(*self.flying.values(), return_exceptions=True)


async def tick(deps: Deps, charger: Charger) -> list[Step]:
    """Draw what is due, then one step over every drawn draw; its charges go out meanwhile."""
    now = utcnow()
    async with deps.sessions() as session:
        due = await drepo.draws_due(session, now)
    steps = []
    for d in due:
        pid = d["product_id"]
        ranked = await draw(deps, pid, now) if d["state"] == "open" else 0
        s = await step(deps, pid, utcnow())
        s.ranked = ranked
        again = await resend(deps, pid, utcnow())
        charger.ask([*s.charge, *again], await _product_name(deps, pid))
        steps.append(s)
    return steps


async def _product_name(deps: Deps, pid: str) -> str:
    async def load() -> str:
        async with deps.sessions() as session:
            return await drepo.product_name(session, pid)

    name: str = await deps.cache.get(("product_name", pid), load)
    return name


async def tell(
    session: AsyncSession, pid: str, draw_row: Mapping[Any, Any], entry_ids: list[str]
) -> None:
    """The decided entrants' results, as events in the deciding transaction (the users
    service mails them): none is lost, none is told twice."""
    if not entry_ids:
        return
    name = await drepo.product_name(session, pid)
    sizes = {i["id"]: int(i["size"]) for i in await drepo.items_of(session, pid)}
    events = [
        DrawEntryDecided(
            entry_id=r["id"],
            product_id=pid,
            product_name=name,
            buyer_id=r["buyer_id"],
            item_id=r["item_id"],
            size=sizes.get(r["item_id"], 0),
            state=r["state"],
            order_id=r["order_id"] if r["state"] == EntryState.WON else None,
            seed=draw_row["seed"],
            commitment=draw_row["commitment"],
        )
        for r in await drepo.decided_entries(session, entry_ids)
        if r["state"] in DECIDED_ENTRY_STATES
    ]
    for start in range(0, len(events), 2000):
        await add_many_to_outbox(session, outbox, events[start : start + 2000])


async def run_draws(deps: Deps, stop: asyncio.Event) -> None:
    """The draws' loop of the products worker, every ``draw_step_seconds``."""
    interval = deps.settings.draw_step_seconds
    charger = Charger(deps)
    while not stop.is_set():
        try:
            await tick(deps, charger)
        except Exception:
            log.exception("draw pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
    await charger.drain()
