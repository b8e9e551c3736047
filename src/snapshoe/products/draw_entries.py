"""The draw's buyer side: enter with a size and a billing key, read, withdraw; the published
draw and the operators' figures. docs/draws.md."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError

from snapshoe.kernel.clients import UpstreamProblem, UpstreamUnavailable
from snapshoe.kernel.clock import rfc3339, utcnow
from snapshoe.kernel.errors import Problem, not_found, service_unavailable
from snapshoe.products import draw_repository as drepo
from snapshoe.products import repository as repo
from snapshoe.products import schemas
from snapshoe.products.deps import Deps
from snapshoe.products.domain import EntryState, new_id

ALGORITHM = "hmac-sha256(seed, entry_id) ascending per item_id; docs/draws.md"


def entry_out(row: Mapping[Any, Any]) -> schemas.Entry:
    state = row["state"]
    won = state == EntryState.WON
    return schemas.Entry(
        id=row["id"],
        product_id=row["product_id"],
        item_id=row["item_id"],
        # A drawn entrant whose charge is under way has not won yet: still "entered".
        state=EntryState.ENTERED if state == EntryState.CHARGING else state,
        order_id=row["order_id"] if won else None,
        card_number=row["card_number"],
        created_at=rfc3339(row["created_at"]),
    )


async def _draw_product(deps: Deps, pid: str) -> Mapping[Any, Any]:
    async def load() -> Mapping[Any, Any] | None:
        async with deps.sessions() as session:
            return await repo.get_product(session, pid)

    product: Mapping[Any, Any] | None = await deps.cache.get(("draw_product", pid), load)
    if product is None:
        raise not_found("product")
    if product["sale_mode"] != "draw":
        raise Problem(409, "not_a_draw", detail="This product is not sold by a draw")
    return product


def _window(product: Mapping[Any, Any]) -> None:
    now = utcnow()
    if now < product["entry_opens_at"]:
        raise Problem(
            409,
            "entries_not_open",
            detail="Entries have not opened yet",
            entry_opens_at=rfc3339(product["entry_opens_at"]),
        )
    if now >= product["entry_closes_at"]:
        raise Problem(409, "entries_closed", detail="Entries are closed")


async def enter(
    deps: Deps, pid: str, buyer: str, body: schemas.EntryIn
) -> tuple[schemas.Entry, bool]:
    """The buyer's entry, and whether this call made it (201) or found it (200)."""
    product = await _draw_product(deps, pid)
    async with deps.sessions() as session:
        mine = await drepo.entry_of(session, pid, buyer)
        item = await repo.get_item(session, body.item_id)
    if mine is not None and mine["state"] != EntryState.WITHDRAWN:
        if mine["item_id"] == body.item_id and mine["billing_key"] == body.billing_key:
            return entry_out(mine), False  # the same entry again
        _window(product)
        raise Problem(409, "already_entered", detail="You have entered this draw already")
    _window(product)
    if item is None or item["product_id"] != pid:
        raise Problem(
            404, "not_found", detail="Unknown size for this product", item_ids=[body.item_id]
        )
    card = await _card_of(deps, body.billing_key, buyer)
    now = utcnow()
    values = {
        "item_id": body.item_id,
        "billing_key": body.billing_key,
        "card_number": card.card_number[:32],
        "card_fingerprint": card.card_fingerprint,
        "card_active": card.card_fingerprint,
        "state": EntryState.ENTERED,
        "rank": None,
        "order_id": None,
        "updated_at": now,
    }
    try:
        async with deps.sessions.begin() as session:
            if mine is None:
                await drepo.insert_entry(
                    session,
                    {
                        "id": new_id(),
                        "product_id": pid,
                        "buyer_id": buyer,
                        "created_at": now,
                        **values,
                    },
                )
            else:  # entering again after a withdrawal: the same entry, its new size and card
                await drepo.update_entry(session, mine["id"], **values)
            row = await drepo.entry_of(session, pid, buyer)
    except IntegrityError as exc:
        return await _conflict(deps, pid, buyer, body, exc)
    assert row is not None
    return entry_out(row), True


async def _conflict(
    deps: Deps, pid: str, buyer: str, body: schemas.EntryIn, exc: IntegrityError
) -> tuple[schemas.Entry, bool]:
    """A unique key refused the entry: this buyer's concurrent entry, or the card's."""
    async with deps.sessions() as session:
        mine = await drepo.entry_of(session, pid, buyer)
    if mine is not None and mine["state"] != EntryState.WITHDRAWN:
        if mine["item_id"] == body.item_id and mine["billing_key"] == body.billing_key:
            return entry_out(mine), False
        raise Problem(409, "already_entered", detail="You have entered this draw already")
    if "card_active" in str(exc.orig):
        raise Problem(
            409,
            "card_already_entered",
            detail="This card is already entered in this draw",
        ) from None
    raise exc


async def _card_of(deps: Deps, billing_key: str, buyer: str) -> Any:
    """The billing key's card, as the PG knows it (through payments): it must be the buyer's."""
    try:
        return await deps.payments.verify_billing_key(billing_key, buyer)
    except UpstreamProblem as exc:
        if exc.status == 422:
            raise Problem(
                422,
                "billing_key_invalid",
                detail="This billing key is not one of your cards",
            ) from None
        raise service_unavailable("Cards cannot be checked now; try again") from None
    except UpstreamUnavailable:
        raise service_unavailable("Cards cannot be checked now; try again") from None


async def my_entry(deps: Deps, pid: str, buyer: str) -> schemas.Entry:
    async with deps.sessions() as session:
        row = await drepo.entry_of(session, pid, buyer)
    if row is None:
        raise not_found("entry")
    return entry_out(row)


async def withdraw(deps: Deps, pid: str, buyer: str) -> None:
    product = await _draw_product(deps, pid)
    async with deps.sessions.begin() as session:
        row = await drepo.entry_for_update(session, pid, buyer)
        if row is None or row["state"] == EntryState.WITHDRAWN:
            if row is None:
                raise not_found("entry")
            return  # withdrawn already: the same answer
        if utcnow() >= product["entry_closes_at"] or row["state"] != EntryState.ENTERED:
            raise Problem(409, "entries_closed", detail="Entries are closed")
        await drepo.update_entry(
            session, row["id"], state=EntryState.WITHDRAWN, card_active=None, updated_at=utcnow()
        )


# --- the published draw and the operators' view ----------------------------------------------


async def _draw_rows(
    deps: Deps, pid: str
) -> tuple[Mapping[Any, Any], Mapping[Any, Any], list[Any], dict[tuple[str, str], int]]:
    async with deps.sessions() as session:
        product = await repo.get_product(session, pid)
        draw = await drepo.get_draw(session, pid)
        if product is None or draw is None:
            raise not_found("draw")
        sizes = await drepo.items_of(session, pid)
        counts = await drepo.counts(session, pid)
    return product, draw, sizes, counts


def _items(sizes: list[Any], counts: dict[tuple[str, str], int]) -> list[schemas.DrawItem]:
    def n(item: str, *states: str) -> int:
        return sum(counts.get((item, s), 0) for s in states)

    return [
        schemas.DrawItem(
            item_id=i["id"],
            size=i["size"],
            pairs=int(i["initial"]),
            entries=n(i["id"], *(s for s in EntryState if s != EntryState.WITHDRAWN)),
            won=n(i["id"], EntryState.WON),
            payment_failed=n(i["id"], EntryState.PAYMENT_FAILED),
            lost=n(i["id"], EntryState.LOST),
        )
        for i in sizes
    ]


async def published_draw(deps: Deps, pid: str) -> schemas.DrawOut:
    """The public draw: a crowd reads it after the reveal, so it is cached for a second."""

    async def load() -> schemas.DrawOut:
        product, draw, sizes, counts = await _draw_rows(deps, pid)
        revealed = draw["state"] != "open"
        entries: list[schemas.PublishedEntry] = []
        async with deps.sessions() as session:
            for r in await drepo.published(session, pid):
                state = r["state"]
                entries.append(
                    schemas.PublishedEntry(
                        id=r["id"],
                        item_id=r["item_id"],
                        state=EntryState.ENTERED if state == EntryState.CHARGING else state,
                        rank=r["rank"],
                    )
                )
        return schemas.DrawOut(
            product_id=pid,
            state=draw["state"],
            commitment=draw["commitment"],
            seed=draw["seed"] if revealed else None,
            entry_opens_at=rfc3339(product["entry_opens_at"]),
            entry_closes_at=rfc3339(product["entry_closes_at"]),
            draw_at=rfc3339(product["draw_at"]),
            drawn_at=rfc3339(d) if (d := draw["drawn_at"]) is not None else None,
            settled_at=rfc3339(d) if (d := draw["settled_at"]) is not None else None,
            algorithm=ALGORITHM,
            items=_items(sizes, counts),
            entries=entries,
        )

    out: schemas.DrawOut = await deps.cache.get(("draw", pid), load)
    return out


async def draw_figures(deps: Deps, pid: str) -> schemas.DrawFigures:
    _, draw, sizes, counts = await _draw_rows(deps, pid)

    def total(state: str) -> int:
        return sum(n for (_, s), n in counts.items() if s == state)

    async with deps.sessions() as session:
        ledger = {i["id"]: i for i in await drepo.items_of(session, pid)}
    return schemas.DrawFigures(
        state=draw["state"],
        items=_items(sizes, counts),
        entered=total(EntryState.ENTERED),
        withdrawn=total(EntryState.WITHDRAWN),
        charging=total(EntryState.CHARGING),
        won=total(EntryState.WON),
        lost=total(EntryState.LOST),
        payment_failed=total(EntryState.PAYMENT_FAILED),
        unsold_pairs=sum(int(i["available"]) for i in ledger.values())
        if draw["state"] == "settled"
        else 0,
    )
