"""Placing an order: ``POST /api/orders``, the drop path.

Idempotency in Redis, one reservation call to products (whose Redis gate refuses a sold-out
request without any database access), and only for an admitted reservation one transaction
here (group commit, :func:`write_placements`). Refusals (4xx) are stored in Redis and
replayed. What keeps a stampede cheap (the sold-out hint, backpressure, item snapshots) is in
``admission.py``; :func:`_place` is the business sequence: the lines, the reservation, the
order and its ``order.placed`` event, compensation (a release) when no order was written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from pydantic import ValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError

from snapshoe.kernel import tracing
from snapshoe.kernel.batching import OutcomeUnknown, fault, look, together_or_alone
from snapshoe.kernel.clients import UpstreamProblem, UpstreamUnavailable
from snapshoe.kernel.clock import to_db, utcnow
from snapshoe.kernel.contracts.internal_products import (
    MAX_LINE_QUANTITY,
    MAX_LINES,
    ReservationOut,
    ReserveIn,
)
from snapshoe.kernel.contracts.internal_products import LineIn as ReserveLine
from snapshoe.kernel.contracts.orders import OrderLine, OrderPlaced
from snapshoe.kernel.errors import Problem
from snapshoe.kernel.idempotency import fingerprint
from snapshoe.kernel.messaging import add_many_to_outbox
from snapshoe.orders import refusals, schemas
from snapshoe.orders import repository as repo
from snapshoe.orders.admission import (
    learn_from_refusal,
    reserve_slot,
    snapshot_lines,
    sold_out_refusal,
)
from snapshoe.orders.answers import Answer, outcome_unknown, unavailable
from snapshoe.orders.baseline import INTERNAL_FIELDS
from snapshoe.orders.deps import Placement
from snapshoe.orders.domain import (
    Line,
    Status,
    StockState,
    expires_at,
    merge_lines,
    new_order_id,
)
from snapshoe.orders.queries import load_out, order_out
from snapshoe.orders.stock import release, release_in_background, spawn
from snapshoe.orders.tables import outbox

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from snapshoe.orders.deps import Deps

log = logging.getLogger("snapshoe.orders")

# Most new orders one transaction writes (group commit, see write_placements).
PLACEMENT_BATCH_MAX = 64
PLACEMENTS = "orders_placements"  # the group commit's name (metrics, test seam)
# How long a resolver looks for an order whose commit outcome was lost: inside the
# Idempotency-Key's pending lease (60 s), so the key is answered before it is freed.
RESOLVE_SECONDS = 45.0
PLACEMENT_FALLBACKS = Counter(
    "snapshoe_orders_placement_batch_fallbacks_total",
    "Batches of new orders refused as a whole and then written one order at a time",
)

# Problem fields that are not "extras" worth passing on from an upstream problem.
_PROBLEM_FIELDS = {"type", "title", "status", "detail", "code", "instance"}
# Business refusals of products that the buyer sees as they are.
_PASS_THROUGH = {403, 404, 409, 422}
# Refusals a retry with the same key may see change: a reused key is the caller's mistake, and
# a buyer turned away without an admission may be admitted a moment later (docs/waiting-room.md).
_NOT_STORED = frozenset(("idempotency_key_reused", "admission_required"))


async def create_order(
    deps: Deps,
    *,
    buyer_id: str,
    key: str,
    request: schemas.CreateOrder,
    admission_token: str | None = None,
    order_id: str | None = None,
) -> Answer:
    """``order_id``: the id to place the order under (a draw's winner, whose id products
    chose: draw_orders.py); otherwise a new one. A buyer's answer (no ``order_id``) is counted
    for the operator's figures (``refusals.py``)."""
    fp = fingerprint("POST", "/api/orders", request.model_dump(mode="json"))
    store = deps.idempotency
    refusal = None
    if request.lines is not None and order_id is None:  # a refusal without asking products
        refusal = sold_out_refusal(deps.sold_out, [x.item_id for x in request.lines])
    try:
        if refusal is not None:
            # Most of a stampede: one Redis round trip, no products call, no database.
            lines = [Line(x.item_id, x.quantity) for x in request.lines or []]
            count = await _counters(deps, lines, refusal.status, refusal.code)
            body = refusal.body()
            begin = await store.answer(buyer_id, key, fp, refusal.status, body, count=count)
            if begin.outcome == "proceed":
                raise refusal
        else:
            begin = await store.begin(buyer_id, key, fp)
    except RedisError as exc:
        raise unavailable("Idempotency storage") from exc
    if begin.outcome == "replay":
        return Answer(begin.status, begin.body, replayed=True)
    attempt = _Attempt(deps, buyer_id, key, fp, counted=order_id is None)
    return await attempt.run(request, admission_token, order_id)


@dataclass
class _Attempt:
    """One request that holds its Idempotency-Key as pending: placed, or refused, and its
    answer stored (or the key freed) and counted."""

    deps: Deps
    buyer_id: str
    key: str
    fp: str
    counted: bool
    lines: list[Line] = field(default_factory=list)

    async def run(
        self, request: schemas.CreateOrder, admission: str | None, order_id: str | None
    ) -> Answer:
        deps, store = self.deps, self.deps.idempotency
        buyer_id, key, fp = self.buyer_id, self.key, self.fp
        try:
            self.lines = await _lines_of(deps, buyer_id, request)
            answer = await _place(
                deps,
                buyer_id=buyer_id,
                key=key,
                fp=fp,
                request=request,
                lines=self.lines,
                admission=admission,
                order_id=order_id,
            )
        except Problem as problem:
            count = await self._counters(problem.status, problem.code)
            if problem.status < 500 and problem.code not in _NOT_STORED:
                # A business answer: stored, so a replay gets the same refusal.
                await _quietly(
                    store.complete(buyer_id, key, fp, problem.status, problem.body(), count=count)
                )
            elif problem.code == "outcome_unknown":
                # The key stays pending: _resolve_unknown answers or frees it.
                await refusals.count_alone(deps.redis, count)
            else:
                await _quietly(store.abandon(buyer_id, key, fp, count=count))
            raise
        except Exception:
            count = await self._counters(500, None)
            await _quietly(store.abandon(buyer_id, key, fp, count=count))
            raise
        except BaseException:
            await _quietly(store.abandon(buyer_id, key, fp))
            raise
        # If this write is lost, UNIQUE(buyer_id, idempotency_key) still answers the retry.
        await _quietly(store.complete(buyer_id, key, fp, answer.status, answer.body))
        return answer

    async def _counters(self, status: int, code: str | None) -> list[str]:
        if not self.counted:
            return []
        return await _counters(self.deps, self.lines, status, code)


async def _counters(deps: Deps, lines: Sequence[Line], status: int, code: str | None) -> list[str]:
    """The figures an answer counts under (refusals.py). A 5xx is counted only under products
    already known: asking products then would hold the answer to an outage."""
    item_ids = [x.item_id for x in lines]
    if status >= 500:
        known = deps.item_products.known(item_ids) or []
        figure = refusals.figure_of(status, code)
        return [refusals.counter_key(deps.settings, p, figure) for p in known if figure]
    return await refusals.counters(deps.settings, deps.item_products, item_ids, status, code)


async def _quietly(op: Any) -> None:
    try:
        await op
    except RedisError as exc:
        log.warning("idempotency store write failed: %s", exc)


async def _place(
    deps: Deps,
    *,
    buyer_id: str,
    key: str,
    fp: str,
    request: schemas.CreateOrder,
    lines: list[Line],
    admission: str | None,
    order_id: str | None = None,
) -> Answer:
    now = utcnow()
    # A given id is asked for again until its order exists (a draw's winner): its reservation
    # is kept for that retry rather than given back on a failure here.
    retried_by_id = order_id is not None
    order_id = order_id or new_order_id()
    until = expires_at(now, deps.settings.order_payment_ttl_seconds)
    reservation = await _reserve(
        deps, order_id, buyer_id, lines, until, admission, compensate=not retried_by_id
    )
    if reservation.state == "RELEASED":
        # Only a retry by id meets its reservation settled (released by the sweeper, say):
        # no order is written for a pair that is not held.
        raise Problem(
            409, "reservation_released", detail="This order's reservation is no longer held"
        )
    try:
        snapshot = await snapshot_lines(deps.items, reservation.lines)
        order = _new_order(order_id, buyer_id, key, fp, request, snapshot, now, until)
        placed = _placed_event(order, snapshot, until, request.from_cart, retried_by_id)
        # Group commit: written with the other orders placed meanwhile (write_placements).
        await deps.placements.submit(
            Placement(order, snapshot, placed, now, tracing.carrier() or None)
        )
    except IntegrityError as exc:
        if not retried_by_id:  # the key's order is another one: this reservation is spare
            await release(deps, order_id)
        return await _existing_for_key(deps, buyer_id, key, fp, exc)
    except OutcomeUnknown as exc:
        # The order may have landed: releasing now would leave it without its pair. Nothing
        # is released; a resolver looks until it can tell (docs/products.md, "Unknown commit
        # outcomes"), and if it never can, the order's expiry or products' sweeper does.
        answer = _placed_answer(order, snapshot, now)
        spawn(deps, _resolve_unknown(deps, buyer_id, key, fp, order_id, answer))
        raise outcome_unknown() from exc
    except BaseException:
        if not retried_by_id:
            await release(deps, order_id)
        raise
    if request.from_cart:
        await _take_from_cart(deps, placed)
    return Answer(201, _placed_answer(order, snapshot, now))


async def _lines_of(deps: Deps, buyer_id: str, request: schemas.CreateOrder) -> list[Line]:
    """The order's lines: the request's (merged), or the buyer's cart."""
    if request.lines is not None:
        return merge_lines(Line(x.item_id, x.quantity) for x in request.lines)
    return await _cart_lines(deps, buyer_id)


async def _reserve(
    deps: Deps,
    order_id: str,
    buyer_id: str,
    lines: list[Line],
    until: datetime,
    admission: str | None,
    *,
    compensate: bool = True,
) -> ReservationOut:
    """The reservation at products (the order id is its id), through admission. Unanswered,
    it is given back (``compensate``) unless the caller asks again by the same id."""
    item_ids = [x.item_id for x in lines]
    # Built, not validated: these values were checked when the buyer's request was (and the
    # id and time are orders' own); validating them again on every admitted reserve is waste.
    request = ReserveIn.model_construct(
        reservation_id=order_id,
        buyer_id=buyer_id,
        lines=[ReserveLine.model_construct(item_id=x.item_id, quantity=x.quantity) for x in lines],
        reserved_until=until,
        admission_token=admission,
    )
    try:
        async with reserve_slot(deps.reserve_slots, deps.sold_out, item_ids):
            reservation = await deps.products.reserve(request)
    except UpstreamProblem as exc:
        learn_from_refusal(deps.sold_out, lines, exc)
        raise _from_products(exc) from exc
    except UpstreamUnavailable as exc:
        # It may have been reserved before the answer was lost: give it back.
        if compensate:
            release_in_background(deps, order_id)
        raise unavailable("The stock service") from exc
    deps.sold_out.forget(item_ids)  # products just sold these: a hint on them is stale
    deps.item_products.learn(reservation.lines)
    return reservation


def _new_order(
    order_id: str,
    buyer_id: str,
    key: str,
    fp: str,
    request: schemas.CreateOrder,
    snapshot: list[dict[str, Any]],
    now: datetime,
    until: datetime,
) -> dict[str, Any]:
    """The order row: unpaid, its reservation held, due to expire at ``until``."""
    return {
        "id": order_id,
        "buyer_id": buyer_id,
        "idempotency_key": key,
        "request_fingerprint": fp,
        "status": Status.PENDING_PAYMENT,
        "total_amount": sum(x["quantity"] * x["unit_price"] for x in snapshot),
        "from_cart": request.from_cart,
        "stock_state": StockState.HELD,
        "created_at": to_db(now),
        "updated_at": to_db(now),
        "expires_at": to_db(until),
        "next_transition_at": to_db(until),
        # So the lifecycle worker's spans can link back to the request that placed it.
        "trace_parent": tracing.current_traceparent(),
    }


def _placed_event(
    order: dict[str, Any],
    snapshot: list[dict[str, Any]],
    until: datetime,
    from_cart: bool,
    from_draw: bool = False,
) -> OrderPlaced:
    return OrderPlaced(
        order_id=order["id"],
        buyer_id=order["buyer_id"],
        total_amount=order["total_amount"],
        lines=[
            OrderLine(
                item_id=x["item_id"],
                product_id=x["product_id"],
                quantity=x["quantity"],
                unit_price=x["unit_price"],
                product_name=x["product_name"],
            )
            for x in snapshot
        ],
        expires_at=until,
        from_cart=from_cart,
        from_draw=from_draw,
    )


def _placed_answer(
    order: dict[str, Any], snapshot: list[dict[str, Any]], now: datetime
) -> dict[str, Any]:
    """The 201's body of a new order (its history: placed, now)."""
    out = order_out(order, snapshot, [{"status": Status.PENDING_PAYMENT, "at": now}])
    return out.model_dump(mode="json")


async def _resolve_unknown(
    deps: Deps, buyer_id: str, key: str, fp: str, order_id: str, body: dict[str, Any]
) -> None:
    """After an unknown commit outcome: look (with backoff) whether the order landed. Landed:
    the Idempotency-Key gets the 201, so a retry replays the order. Not landed: now known, so
    the reservation is released and the key freed. Meanwhile the key stays pending (a retry
    gets 409 ``idempotency_key_in_use``), so no retry can reserve a second pair and be told
    ``sold_out`` or ``purchase_limit_exceeded`` about an order it has. Never told within the
    lease: the lease frees the key, and a retry then finds the order by its UNIQUE key."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RESOLVE_SECONDS
    delay = 0.05
    while True:
        try:
            fault(PLACEMENTS, "landed")
            async with deps.sessions() as session:
                landed = bool(await repo.existing_ids(session, [order_id]))
            break
        except Exception as exc:
            if loop.time() > deadline:
                log.warning(
                    "outcome of order %s still unknown (%r): left to expiry and the sweeper",
                    order_id,
                    exc,
                )
                return
            await asyncio.sleep(delay)
            delay = min(2 * delay, 2.0)
    if landed:
        await _quietly(deps.idempotency.complete(buyer_id, key, fp, 201, body))
    else:
        await release(deps, order_id)
        await _quietly(deps.idempotency.abandon(buyer_id, key, fp))


# Bounds what a slow users service adds to an order from the cart; the event still empties it.
TAKE_FROM_CART_SECONDS = 2.0


async def _take_from_cart(deps: Deps, placed: OrderPlaced) -> None:
    """Empty the bought lines from the cart before the 201, so the buyer's next cart read is
    without them. Best effort: the ``order.placed`` event (written with the order) does the
    same later, once, whatever happens here (users records both under the event id)."""
    try:
        async with asyncio.timeout(TAKE_FROM_CART_SECONDS):
            await deps.users.take_ordered_lines(placed.buyer_id, placed.to_message())
    except (UpstreamUnavailable, UpstreamProblem, TimeoutError) as exc:
        log.warning("cart not emptied before the answer (the event will): %r", exc)


async def write_placements(deps: Deps, batch: list[Placement]) -> list[BaseException | None]:
    """The group-commit writer of new orders (Deps.placements): the batch's orders, lines,
    history rows and ``OrderPlaced`` events in one transaction, or, if that is refused (a
    duplicate idempotency key), each order alone, so each caller gets its own answer."""

    async def together(session: AsyncSession, items: list[Placement]) -> list[None]:
        await repo.insert_orders(session, [(p.order, p.lines, p.now) for p in items])
        await add_many_to_outbox(
            session, outbox, [p.event for p in items], [p.trace for p in items]
        )
        return [None] * len(items)

    async def written(ids: list[str]) -> bool:
        async with deps.sessions() as session:
            return await repo.existing_ids(session, ids) == set(ids)

    async def alone(p: Placement) -> None:
        committing = False
        try:
            async with deps.sessions.begin() as session:
                await repo.insert_order(session, order=p.order, lines=p.lines, now=p.now)
                await add_many_to_outbox(session, outbox, [p.event], [p.trace])
                committing = True  # from here a failure may have landed
                fault(PLACEMENTS, "commit")
            fault(PLACEMENTS, "committed")
        except Exception:
            # A lost commit: look; OutcomeUnknown (never a release) if that fails too.
            if committing and await look(PLACEMENTS, lambda: written([p.order["id"]])):
                return
            raise

    async def landed(_: Sequence[BaseException | None]) -> bool:
        # If this cannot tell, the callers get OutcomeUnknown and release nothing.
        return await written([p.order["id"] for p in batch])

    return await together_or_alone(
        deps.sessions,
        batch,
        write=together,
        landed=landed,
        alone=alone,
        fallbacks=PLACEMENT_FALLBACKS,
        name=PLACEMENTS,
    )


async def _cart_lines(deps: Deps, buyer_id: str) -> list[Line]:
    try:
        cart = await deps.users.get_cart(buyer_id)
    except UpstreamUnavailable as exc:
        raise unavailable("The cart") from exc
    except UpstreamProblem as exc:
        if exc.status == 404:  # no cart yet is an empty cart
            cart = {"lines": []}
        else:
            log.error("users refused the cart read: %s %s", exc.status, exc.code)
            raise unavailable("The cart") from exc
    try:
        raw = [schemas.LineIn.model_validate(x) for x in cart.get("lines") or []]
    except ValidationError as exc:
        log.error("unexpected cart line from users: %s", exc)
        raise unavailable("The cart") from exc
    if not raw:
        raise Problem(409, "cart_empty", detail="The cart is empty")
    lines = merge_lines(Line(x.item_id, x.quantity) for x in raw)
    if len(lines) > MAX_LINES or any(x.quantity > MAX_LINE_QUANTITY for x in lines):
        raise Problem(
            422,
            "validation_error",
            detail=f"An order holds at most {MAX_LINES} lines of {MAX_LINE_QUANTITY} units",
        )
    return lines


def _from_products(exc: UpstreamProblem) -> Problem:
    if exc.status in _PASS_THROUGH:
        extras = {
            k: v
            for k, v in exc.body.items()
            if k not in _PROBLEM_FIELDS and k not in INTERNAL_FIELDS
        }
        return Problem(
            exc.status,
            exc.code or "conflict",
            title=exc.body.get("title"),
            detail=exc.body.get("detail"),
            **extras,
        )
    log.error("products refused a reservation: %s %s", exc.status, exc.code)
    return unavailable("The stock service")


async def _existing_for_key(
    deps: Deps, buyer_id: str, key: str, fp: str, exc: IntegrityError
) -> Answer:
    """The insert hit UNIQUE(buyer_id, idempotency_key): an order for this key exists though
    Redis forgot the key. Answer as a replay (or a reuse, if the body differs)."""
    async with deps.sessions() as session:
        row = await repo.order_by_key(session, buyer_id, key)
        if row is None:
            raise exc
        if row["request_fingerprint"] != fp:
            raise Problem(
                422,
                "idempotency_key_reused",
                detail="This Idempotency-Key was used with a different request",
            )
        out = await load_out(session, row)
    return Answer(201, out.model_dump(mode="json"), replayed=True)
