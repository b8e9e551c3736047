"""Commands and queries of the orders service. Each command opens its one transaction.

The drop path is :func:`create_order`: idempotency in Redis, one reservation call to products
(whose Redis gate refuses a sold-out request without any database access), and only for an
admitted reservation one transaction here. Refusals (4xx) are stored in Redis and replayed.

Stock follows the order through intents: a transition that must commit or release the
reservation sets ``stock_state`` to ``COMMITTING`` / ``RELEASING`` in its own transaction, and
:func:`settle_stock` (the worker, and the cancel request itself for a prompt answer) carries
the intent out at products, idempotently, until products agrees.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from pydantic import ValidationError
from redis.exceptions import RedisError
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from snapshoe.kernel.batching import OutcomeUnknown, fault, look, together_or_alone
from snapshoe.kernel.clients import UpstreamProblem, UpstreamUnavailable
from snapshoe.kernel.contracts.orders import (
    OrderCancelled,
    OrderLine,
    OrderPaid,
    OrderPaymentFailed,
    OrderPlaced,
    OrderRefundRequired,
)
from snapshoe.kernel.contracts.payments import (
    PaymentApproved,
    PaymentFailed,
    PaymentRefunded,
    PaymentRefundedAtPg,
)
from snapshoe.kernel.errors import Problem, not_found
from snapshoe.kernel.idempotency import fingerprint
from snapshoe.kernel.messaging import add_many_to_outbox, add_to_outbox
from snapshoe.orders import repository as repo
from snapshoe.orders import schemas
from snapshoe.orders.domain import (
    CANCELLABLE,
    MAX_LINE_QUANTITY,
    MAX_LINES,
    InvalidCursor,
    Line,
    Status,
    StockState,
    decode_cursor,
    encode_cursor,
    expires_at,
    merge_lines,
    new_order_id,
    next_stage_at,
    rfc3339,
    to_db,
    utcnow,
)
from snapshoe.orders.tables import outbox

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from snapshoe.kernel.settings import Settings
    from snapshoe.orders.bootstrap import Deps

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
# Fields of products' refusals meant for orders alone, not passed on to the buyer.
_INTERNAL_FIELDS = {"stock_mode"}
# Business refusals of products that the buyer sees as they are.
_PASS_THROUGH = {404, 409, 422}


def unavailable(what: str) -> Problem:
    return Problem(
        503,
        "service_unavailable",
        detail=f"{what} is unavailable; retry shortly",
        headers={"Retry-After": "1"},
    )


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool = False


# Place an order


async def create_order(
    deps: Deps, *, buyer_id: str, key: str, request: schemas.CreateOrder
) -> Answer:
    fp = fingerprint("POST", "/api/orders", request.model_dump(mode="json"))
    store = deps.idempotency
    refusal = _hinted_refusal(deps, request)
    try:
        if refusal is not None:
            # Most of a stampede: one Redis round trip, no products call, no database.
            begin = await store.answer(buyer_id, key, fp, refusal.status, refusal.body())
            if begin.outcome == "proceed":
                raise refusal
        else:
            begin = await store.begin(buyer_id, key, fp)
    except RedisError as exc:
        raise unavailable("Idempotency storage") from exc
    if begin.outcome == "replay":
        return Answer(begin.status, begin.body, replayed=True)
    try:
        answer = await _place(deps, buyer_id=buyer_id, key=key, fp=fp, request=request)
    except Problem as problem:
        if problem.status < 500 and problem.code != "idempotency_key_reused":
            # A business answer: stored, so a replay gets the same refusal.
            await _quietly(store.complete(buyer_id, key, fp, problem.status, problem.body()))
        elif problem.code == "outcome_unknown":
            pass  # the key stays pending: _resolve_unknown answers or frees it
        else:
            await _quietly(store.abandon(buyer_id, key, fp))
        raise
    except BaseException:
        await _quietly(store.abandon(buyer_id, key, fp))
        raise
    # If this write is lost, UNIQUE(buyer_id, idempotency_key) still answers the retry.
    await _quietly(store.complete(buyer_id, key, fp, answer.status, answer.body))
    return answer


def _hinted_refusal(deps: Deps, request: schemas.CreateOrder) -> Problem | None:
    """A sold-out refusal orders can give without products (see domain.SoldOutHints)."""
    if request.lines is None:
        return None
    return _hinted_sold_out(deps, [x.item_id for x in request.lines])


def _hinted_sold_out(deps: Deps, item_ids: list[str], *, waited: bool = False) -> Problem | None:
    hints = deps.sold_out
    now = time.monotonic()
    hinted = hints.still_refused(item_ids, now) if waited else hints.refused(item_ids, now)
    if not hinted:
        return None
    return Problem(409, "sold_out", detail="Not enough stock", item_ids=hinted)


async def _quietly(op: Any) -> None:
    try:
        await op
    except RedisError as exc:
        log.warning("idempotency store write failed: %s", exc)


async def _place(
    deps: Deps, *, buyer_id: str, key: str, fp: str, request: schemas.CreateOrder
) -> Answer:
    if request.lines is not None:
        lines = merge_lines(Line(x.item_id, x.quantity) for x in request.lines)
    else:
        lines = await _cart_lines(deps, buyer_id)
    settings = deps.settings
    now = utcnow()
    order_id = new_order_id()
    until = expires_at(now, settings.order_payment_ttl_seconds)
    item_ids = [x.item_id for x in lines]
    try:
        async with deps.reserve_slots:
            # Backpressure: while this request waited for a slot, products may have said the
            # item is sold out; then the answer is known without asking again.
            if (refusal := _hinted_sold_out(deps, item_ids, waited=True)) is not None:
                raise refusal
            reservation = await deps.products.reserve(
                order_id,
                buyer_id,
                [{"item_id": x.item_id, "quantity": x.quantity} for x in lines],
                until,
            )
    except UpstreamProblem as exc:
        if exc.code == "sold_out" and exc.body.get("stock_mode") == "db_lock":
            pass  # the row-lock baseline: no hint, every attempt asks products' database
        elif exc.code == "sold_out":
            # Only a refusal of a single unit proves nothing is left of that item.
            single = {x.item_id for x in lines if x.quantity == 1}
            refused = [str(i) for i in exc.body.get("item_ids") or [] if i in single]
            deps.sold_out.remember(refused, time.monotonic())
        else:
            # Refused for another reason (a limit, a closed drop): none of these items is
            # known to be sold out, so a hint (and its probe) on them ends.
            deps.sold_out.forget(item_ids)
        raise _from_products(exc) from exc
    except UpstreamUnavailable as exc:
        # It may have been reserved before the answer was lost: give it back.
        _release_in_background(deps, order_id)
        raise unavailable("The stock service") from exc
    deps.sold_out.forget(item_ids)  # products just sold these: a hint on them is stale

    try:
        snapshot = await _snapshot(deps, reservation["lines"])
        order = {
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
        }
        placed = OrderPlaced(
            order_id=order_id,
            buyer_id=buyer_id,
            total_amount=order["total_amount"],
            lines=[
                OrderLine(
                    item_id=x["item_id"],
                    product_id=x["product_id"],
                    quantity=x["quantity"],
                    unit_price=x["unit_price"],
                )
                for x in snapshot
            ],
            expires_at=until,
            from_cart=request.from_cart,
        )
        # Group commit: written with the other orders placed meanwhile (write_placements).
        await deps.placements.submit(Placement(order, snapshot, placed, now))
    except IntegrityError as exc:
        await _release(deps, order_id)
        return await _existing_for_key(deps, buyer_id, key, fp, exc)
    except OutcomeUnknown as exc:
        # The order may have landed: releasing now would leave it without its pair. Nothing
        # is released; a resolver looks until it can tell (docs/products.md, "Unknown commit
        # outcomes"), and if it never can, the order's expiry or products' sweeper does.
        out = _order_out(order, snapshot, [{"status": Status.PENDING_PAYMENT, "at": now}])
        answer = out.model_dump(mode="json")
        _spawn(deps, _resolve_unknown(deps, buyer_id, key, fp, order_id, answer))
        raise outcome_unknown() from exc
    except BaseException:
        await _release(deps, order_id)
        raise
    if request.from_cart:
        await _take_from_cart(deps, placed)
    body = _order_out(order, snapshot, [{"status": Status.PENDING_PAYMENT, "at": now}])
    return Answer(201, body.model_dump(mode="json"))


def outcome_unknown() -> Problem:
    return Problem(
        503,
        "outcome_unknown",
        detail="The order may or may not have been placed; retry with the same Idempotency-Key",
        headers={"Retry-After": "1"},
    )


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
        await _release(deps, order_id)
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


@dataclass(frozen=True, slots=True)
class Placement:
    """A reserved order on its way to the database (Deps.placements)."""

    order: dict[str, Any]
    lines: list[dict[str, Any]]
    event: OrderPlaced
    now: datetime


async def write_placements(deps: Deps, batch: list[Placement]) -> list[BaseException | None]:
    """The group-commit writer of new orders (Deps.placements): the batch's orders, lines,
    history rows and ``OrderPlaced`` events in one transaction, or, if that is refused (a
    duplicate idempotency key), each order alone, so each caller gets its own answer."""

    async def together(session: AsyncSession, items: list[Placement]) -> list[None]:
        await repo.insert_orders(session, [(p.order, p.lines, p.now) for p in items])
        await add_many_to_outbox(session, outbox, [p.event for p in items])
        return [None] * len(items)

    async def written(ids: list[str]) -> bool:
        async with deps.sessions() as session:
            return await repo.existing_ids(session, ids) == set(ids)

    async def alone(p: Placement) -> None:
        committing = False
        try:
            async with deps.sessions.begin() as session:
                await repo.insert_order(session, order=p.order, lines=p.lines, now=p.now)
                await add_to_outbox(session, outbox, p.event)
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
            if k not in _PROBLEM_FIELDS and k not in _INTERNAL_FIELDS
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


async def _snapshot(deps: Deps, reserved: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    need = [str(x["item_id"]) for x in reserved if "product_name" not in x]
    try:
        details = await deps.items.get(need) if need else {}
    except (UpstreamProblem, UpstreamUnavailable) as exc:
        raise unavailable("The catalog") from exc
    lines = []
    for x in reserved:
        item_id = str(x["item_id"])
        d = details.get(item_id)
        if "product_name" in x:
            name, size, color = str(x["product_name"]), int(x["size"]), str(x["color"])
        elif d is not None:
            name, size, color = d.product_name, d.size, d.color
        else:
            raise unavailable("The catalog")
        lines.append(
            {
                "item_id": item_id,
                "product_id": str(x["product_id"]),
                "product_name": name,
                "size": size,
                "color": color,
                "quantity": int(x["quantity"]),
                "unit_price": int(x["unit_price"]),
            }
        )
    return lines


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
        out = await _load_out(session, row)
    return Answer(201, out.model_dump(mode="json"), replayed=True)


async def _release(deps: Deps, order_id: str) -> None:
    """Give a reservation back (idempotent at products); an outage leaves it to the sweeper
    of products, which releases it at ``reserved_until``."""
    try:
        await deps.products.release(order_id)
    except UpstreamProblem as exc:
        if exc.status != 404:
            log.warning("release of %s refused: %s %s", order_id, exc.status, exc.code)
    except UpstreamUnavailable as exc:
        log.warning("release of %s failed (%s); the products sweeper will", order_id, exc)


def _release_in_background(deps: Deps, order_id: str) -> None:
    _spawn(deps, _release(deps, order_id))


def _spawn(deps: Deps, work: Any) -> None:
    task = asyncio.create_task(work)
    deps.background.add(task)
    task.add_done_callback(deps.background.discard)


# Queries


def _order_out(
    order: RowMapping | dict[str, Any],
    lines: Sequence[RowMapping | dict[str, Any]],
    history: Sequence[RowMapping | dict[str, Any]],
) -> schemas.OrderOut:
    return schemas.OrderOut(
        id=order["id"],
        status=order["status"],
        lines=[
            schemas.OrderLineOut(
                item_id=x["item_id"],
                product_id=x["product_id"],
                product_name=x["product_name"],
                size=x["size"],
                color=x["color"],
                quantity=x["quantity"],
                unit_price=x["unit_price"],
            )
            for x in lines
        ],
        total_amount=order["total_amount"],
        created_at=_ts(order["created_at"]),
        updated_at=_ts(order["updated_at"]),
        expires_at=_ts(order["expires_at"]),
        paid_at=rfc3339(order.get("paid_at")),
        refunded_at=rfc3339(order.get("refunded_at")),
        history=[
            schemas.HistoryEntry(status=h["status"], at=_ts(h["at"]), reason=h.get("reason"))
            for h in history
        ],
    )


def _ts(value: datetime) -> str:
    out = rfc3339(value)
    assert out is not None
    return out


async def _load_out(session: AsyncSession, row: RowMapping) -> schemas.OrderOut:
    return _order_out(
        row, await repo.lines_of(session, row["id"]), await repo.history_of(session, row["id"])
    )


async def get_order(deps: Deps, *, buyer_id: str, order_id: str) -> schemas.OrderOut:
    async with deps.sessions() as session:
        row = await repo.get_order(session, order_id, buyer_id)
        if row is None:
            raise not_found("order")
        return await _load_out(session, row)


async def list_orders(
    deps: Deps, *, buyer_id: str, limit: int, cursor: str | None
) -> schemas.OrderPage:
    try:
        after = decode_cursor(cursor) if cursor is not None else None
    except InvalidCursor as exc:
        raise Problem(422, "invalid_cursor", detail=str(exc)) from exc
    async with deps.sessions() as session:
        rows = await repo.page_of_buyer(session, buyer_id, limit=limit + 1, after=after)
    page = rows[:limit]
    return schemas.OrderPage(
        items=[
            schemas.OrderSummary(
                id=r["id"],
                status=r["status"],
                total_amount=r["total_amount"],
                created_at=_ts(r["created_at"]),
                updated_at=_ts(r["updated_at"]),
                expires_at=_ts(r["expires_at"]),
                paid_at=rfc3339(r["paid_at"]),
            )
            for r in page
        ],
        next_cursor=(
            encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > limit else None
        ),
    )


async def internal_order(deps: Deps, order_id: str) -> schemas.InternalOrder:
    async with deps.sessions() as session:
        row = await repo.get_order(session, order_id)
    if row is None:
        raise not_found("order")
    return schemas.InternalOrder(
        id=row["id"],
        buyer_id=row["buyer_id"],
        status=row["status"],
        total_amount=row["total_amount"],
        expires_at=_ts(row["expires_at"]),
        payment_id=row["payment_id"],
    )


# Cancel


async def cancel_order(deps: Deps, *, buyer_id: str, order_id: str) -> schemas.OrderOut:
    for _ in range(5):
        now = utcnow()
        async with deps.sessions.begin() as session:
            row = await repo.get_order(session, order_id, buyer_id)
            if row is None:
                raise not_found("order")
            current = Status(row["status"])
            if current not in CANCELLABLE:
                raise Problem(
                    409,
                    "invalid_state",
                    detail=f"An order in {current} cannot be cancelled",
                    status_now=current.value,
                )
            moved = await repo.transition(
                session,
                order_id,
                expected=current,
                to=Status.CANCELLED,
                now=now,
                stock_state=StockState.RELEASING,
                next_transition_at=None,
                reason="buyer",
            )
            if not moved:
                continue  # moved by a payment event meanwhile: decide again on the new state
            await add_to_outbox(
                session,
                outbox,
                OrderCancelled(
                    order_id=order_id,
                    buyer_id=buyer_id,
                    previous_status=current.value,
                    refund_required=current is Status.PREPARING,
                ),
            )
        # Release now so the stock is back when the buyer sees CANCELLED; the worker retries
        # the intent if products cannot answer right now.
        await settle_one(deps, order_id, StockState.RELEASING)
        return await get_order(deps, buyer_id=buyer_id, order_id=order_id)
    raise Problem(409, "invalid_state", detail="The order is changing; retry")


# Payment events (called by consumers.py inside the inbox transaction)


async def on_payment_approved(
    session: AsyncSession, body: dict[str, Any], settings: Settings
) -> None:
    event = PaymentApproved.model_validate(body)
    now = utcnow()
    moved = await repo.transition(
        session,
        event.order_id,
        expected=Status.PENDING_PAYMENT,
        to=Status.PREPARING,
        now=now,
        stock_state=StockState.COMMITTING,
        next_transition_at=next_stage_at(event.approved_at, settings.order_stage_seconds),
        reason="payment_approved",
        paid_at=to_db(event.approved_at),
        payment_id=event.payment_id,
    )
    if moved:
        await add_to_outbox(
            session,
            outbox,
            OrderPaid(
                order_id=event.order_id, buyer_id=event.buyer_id, payment_id=event.payment_id
            ),
        )
        return
    row = await repo.get_order(session, event.order_id)
    if row is not None and row["payment_id"] == event.payment_id:
        return  # this approval already made the order PREPARING
    # Paid for an order that can no longer be fulfilled (expired, cancelled, failed, paid by
    # another payment, unknown): the money goes back.
    reason = "unknown_order" if row is None else f"order_{str(row['status']).lower()}"
    log.warning("approval %s for order %s: refund (%s)", event.payment_id, event.order_id, reason)
    await add_to_outbox(
        session,
        outbox,
        OrderRefundRequired(
            order_id=event.order_id,
            buyer_id=event.buyer_id,
            payment_id=event.payment_id,
            reason=reason,
        ),
    )


async def on_payment_failed(session: AsyncSession, body: dict[str, Any]) -> None:
    event = PaymentFailed.model_validate(body)
    moved = await repo.transition(
        session,
        event.order_id,
        expected=Status.PENDING_PAYMENT,
        to=Status.PAYMENT_FAILED,
        now=utcnow(),
        stock_state=StockState.RELEASING,
        next_transition_at=None,
        reason=event.code[:64] or "payment_failed",
    )
    if moved:
        await add_to_outbox(
            session,
            outbox,
            OrderPaymentFailed(
                order_id=event.order_id, buyer_id=event.buyer_id, payment_id=event.payment_id
            ),
        )
    # Otherwise the order already left PENDING_PAYMENT (paid, cancelled, expired): a late or
    # duplicate failure changes nothing.


async def on_payment_refunded(session: AsyncSession, body: dict[str, Any]) -> None:
    event = PaymentRefunded.model_validate(body)
    await repo.mark_refunded(session, event.order_id, event.refunded_at)


# Statuses an order refunded at the PG leaves for CANCELLED: the pair has not left the
# warehouse, so it goes back on sale. PENDING_PAYMENT too: the approval may still be on its way
# (events of different types can arrive in any order), and that payment is gone.
STOPPABLE = (Status.PENDING_PAYMENT, Status.PREPARING)
SHIPPED = (Status.SHIPPING, Status.DELIVERED)


async def on_payment_refunded_at_pg(session: AsyncSession, body: dict[str, Any]) -> None:
    """The PG refunded the payment without us (dashboard, chargeback). A full refund stops
    fulfilment before shipping (CANCELLED, pair released); after shipping the pair is gone and
    the order keeps its status with ``refunded_at`` set, for the operator. A partial refund is
    a price adjustment: the order goes on (docs/purchase-flow.md)."""
    event = PaymentRefundedAtPg.model_validate(body)
    if not event.full:
        log.warning(
            "order %s: %s of its payment refunded at the PG; fulfilment goes on",
            event.order_id,
            event.amount,
        )
        return
    for _ in range(3):
        row = await repo.get_order(session, event.order_id)
        if row is None:
            log.error("refund at the PG for unknown order %s", event.order_id)
            return
        if row["payment_id"] not in (None, event.payment_id):
            log.error("refund at the PG of %s: not order %s's payment", event.payment_id, row["id"])
            return
        current = Status(row["status"])
        if current in STOPPABLE:
            moved = await repo.transition(
                session,
                event.order_id,
                expected=current,
                to=Status.CANCELLED,
                now=utcnow(),
                stock_state=StockState.RELEASING,
                next_transition_at=None,
                reason="refunded_at_pg",
                refunded_at=to_db(event.refunded_at),
            )
            if not moved:
                continue  # the lifecycle or another event moved it meanwhile: decide again
            await add_to_outbox(
                session,
                outbox,
                OrderCancelled(
                    order_id=event.order_id,
                    buyer_id=row["buyer_id"],
                    previous_status=current.value,
                    refund_required=False,  # the money is back already
                ),
            )
            return
        await repo.mark_refunded(session, event.order_id, event.refunded_at)
        if current in SHIPPED:
            log.error(
                "order %s is %s but its payment was refunded at the PG: operator attention",
                event.order_id,
                current.value,
            )
        return
    raise RuntimeError(f"order {event.order_id} kept changing; the event is retried")


# Stock intents


async def settle_one(deps: Deps, order_id: str, intent: StockState) -> bool:
    """Carry out one stock intent at products. True when settled (or no longer wanted)."""
    try:
        if intent is StockState.COMMITTING:
            await deps.products.commit(order_id)
            final = StockState.COMMITTED
        else:
            await deps.products.release(order_id)
            final = StockState.RELEASED
    except UpstreamUnavailable as exc:
        log.warning("stock %s of %s postponed: %s", intent, order_id, exc)
        return False
    except UpstreamProblem as exc:
        if intent is StockState.COMMITTING and exc.code == "reservation_released":
            return await _reservation_lost(deps, order_id)
        if exc.status == 404:
            log.error("order %s has no reservation at products; marking %s", order_id, intent)
            final = StockState.COMMITTED if intent is StockState.COMMITTING else StockState.RELEASED
        else:
            log.warning("stock %s of %s refused: %s %s", intent, order_id, exc.status, exc.code)
            return False
    async with deps.sessions.begin() as session:
        await repo.settle_stock(session, order_id, expected=intent, to=final, now=utcnow())
    return True


async def _reservation_lost(deps: Deps, order_id: str) -> bool:
    """Paid, but products had already released the reservation (the sweeper's last-resort
    expiry): the order cannot be fulfilled, so it expires and the payment is refunded."""
    async with deps.sessions.begin() as session:
        row = await repo.get_order(session, order_id)
        if row is None or row["stock_state"] != StockState.COMMITTING:
            return True
        moved = await repo.transition(
            session,
            order_id,
            expected=Status(row["status"]),
            expected_stock=StockState.COMMITTING,
            to=Status.EXPIRED,
            now=utcnow(),
            stock_state=StockState.RELEASED,
            next_transition_at=None,
            reason="reservation_released",
        )
        if moved and row["payment_id"]:
            await add_to_outbox(
                session,
                outbox,
                OrderRefundRequired(
                    order_id=order_id,
                    buyer_id=row["buyer_id"],
                    payment_id=row["payment_id"],
                    reason="reservation_released",
                ),
            )
    log.error("order %s was paid after its reservation was released: refunding", order_id)
    return True


async def settle_stock(deps: Deps, *, batch: int = 100, concurrency: int = 16) -> tuple[int, int]:
    """Settle pending stock intents; returns (pending found, settled)."""
    async with deps.sessions() as session:
        rows = await repo.pending_stock(session, batch)
    if not rows:
        return 0, 0
    sem = asyncio.Semaphore(concurrency)

    async def one(row: RowMapping) -> bool:
        async with sem:
            return await settle_one(deps, row["id"], StockState(row["stock_state"]))

    results = await asyncio.gather(*(one(r) for r in rows))
    return len(rows), sum(results)
