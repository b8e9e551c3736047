"""Payment commands. Each opens its own short transactions; no transaction is ever held open
across a call to the PG or to another service.

The approve and fail paths (:func:`approve`, :func:`fail`) are shared by the confirm endpoint,
the billing charge (``billing.py``), the reconciler and the webhook: each is one conditional
update from an unresolved status plus its outbox event, so whichever of them gets there first
publishes the one event, and the others see a row count of 0 and read what happened.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from snapshoe.kernel.clients import UpstreamProblem, UpstreamUnavailable
from snapshoe.kernel.clock import as_utc, utcnow
from snapshoe.kernel.contracts.internal_orders import InternalOrder
from snapshoe.kernel.contracts.payments import (
    PaymentApproved,
    PaymentFailed,
)
from snapshoe.kernel.errors import Problem, not_found, service_unavailable
from snapshoe.kernel.idempotency import fingerprint
from snapshoe.kernel.messaging import add_to_outbox
from snapshoe.payments import repository as repo
from snapshoe.payments.domain import (
    CLAIM_LEASE,
    FIRST_CHECK_DELAY,
    PAYABLE_ORDER_STATUS,
    STALE_IN_PROGRESS_GRACE,
    UNRESOLVED,
    Method,
    Payment,
    Status,
    backoff,
    billing_idempotency_key,
    confirm_idempotency_key,
    new_payment_id,
)
from snapshoe.payments.payment_metrics import PAYMENTS
from snapshoe.payments.pg import (
    PgAuthError,
    PgDeclined,
    PgError,
    PgNotFound,
    PgPayment,
    PgStatus,
    parse_webhook,
)
from snapshoe.payments.recheck import record_pg_cancels
from snapshoe.payments.tables import outbox

if TYPE_CHECKING:
    from snapshoe.payments.deps import Core, Deps

log = logging.getLogger("snapshoe.payments")

CONFIRM_PATH = "/api/payments/confirm"
# Answers stored under the Idempotency-Key and replayed: business outcomes. A 202 (result not
# known yet) is not stored: the client's retry re-reads the payment and gets the final answer.
REPLAYABLE = frozenset({200, 400, 402, 404, 409, 422})

PG_APPROVED = (PgStatus.DONE, PgStatus.PARTIAL_CANCELED)
PG_NOT_CHARGED = (PgStatus.ABORTED, PgStatus.EXPIRED, PgStatus.CANCELED)


def invalid_state(detail: str) -> Problem:
    return Problem(409, "invalid_state", detail=detail)


def declined(p: Payment) -> Problem:
    return Problem(
        402,
        "payment_declined",
        "Payment declined",
        p.pg_message or "The payment was declined",
        payment_id=p.id,
        pg_code=p.pg_code,
    )


def answer(p: Payment) -> tuple[int, dict[str, Any]]:
    """The confirm answer for a payment's current state."""
    if p.status is Status.DONE:
        return 200, p.view()
    if p.status in UNRESOLVED:
        return 202, p.view()
    if p.status is Status.ABORTED:
        raise declined(p)
    raise invalid_state("This order's payment was refunded")


# --- confirm ----------------------------------------------------------------------------------


async def confirm(
    deps: Deps,
    *,
    buyer_id: str,
    idempotency_key: str,
    order_id: str,
    payment_key: str,
    amount: int,
) -> tuple[int, dict[str, Any]]:
    """``POST /api/payments/confirm``: (status, body). Raises Problem for 4xx/5xx answers."""
    fp = fingerprint(
        "POST", CONFIRM_PATH, {"order_id": order_id, "payment_key": payment_key, "amount": amount}
    )
    begun = await deps.idempotency.begin(buyer_id, idempotency_key, fp)
    if begun.outcome == "replay":
        body: dict[str, Any] = begun.body
        return begun.status, body
    try:
        status, body = await _confirm(deps, buyer_id, order_id, payment_key, amount)
    except Problem as problem:
        if problem.status in REPLAYABLE:
            await deps.idempotency.complete(
                buyer_id, idempotency_key, fp, problem.status, problem.body()
            )
        else:
            await deps.idempotency.abandon(buyer_id, idempotency_key, fp)
        raise
    except BaseException:
        await deps.idempotency.abandon(buyer_id, idempotency_key, fp)
        raise
    if status in REPLAYABLE:
        await deps.idempotency.complete(buyer_id, idempotency_key, fp, status, body)
    else:
        await deps.idempotency.abandon(buyer_id, idempotency_key, fp)
    return status, body


async def _confirm(
    deps: Deps, buyer_id: str, order_id: str, payment_key: str, amount: int
) -> tuple[int, dict[str, Any]]:
    async with deps.sessions.begin() as session:
        existing = await repo.by_order(session, order_id)
    if existing is not None:
        return _existing(existing, buyer_id, payment_key, amount)

    order = await payable_order(deps, order_id, buyer_id)
    if amount != order.total_amount:
        # Checked before anything is sent to the PG: nothing is charged, the order stays payable.
        raise Problem(
            400,
            "amount_mismatch",
            "Amount mismatch",
            "The amount does not match the order's total",
        )

    now = utcnow()
    payment_id = new_payment_id()
    stale_at = now + timedelta(seconds=deps.settings.pg_timeout_seconds) + STALE_IN_PROGRESS_GRACE
    try:
        async with deps.sessions.begin() as session:
            await repo.insert_in_progress(
                session,
                payment_id=payment_id,
                order_id=order_id,
                buyer_id=buyer_id,
                payment_key=payment_key,
                amount=amount,
                now=now,
                check_at=stale_at,
            )
    except IntegrityError:
        # A concurrent confirm of this order inserted first (UNIQUE(order_id)).
        async with deps.sessions.begin() as session:
            existing = await repo.by_order(session, order_id)
        if existing is None:
            raise
        return _existing(existing, buyer_id, payment_key, amount)

    async with deps.sessions.begin() as session:
        payment = await repo.get(session, payment_id)
    assert payment is not None
    return answer(await send_confirm(deps, payment))


def _existing(
    p: Payment, buyer_id: str, payment_key: str, amount: int
) -> tuple[int, dict[str, Any]]:
    """This order already has a payment: the same confirm again gets its current state;
    anything else cannot be a second charge."""
    if p.buyer_id != buyer_id:
        raise not_found("order")
    if p.method is not Method.CONFIRM or p.payment_key != payment_key:
        raise invalid_state("This order already has a payment")
    if p.amount != amount:
        raise Problem(
            400, "amount_mismatch", "Amount mismatch", "The amount does not match the order"
        )
    return answer(p)


async def payable_order(deps: Deps, order_id: str, buyer_id: str) -> InternalOrder:
    """The order ``buyer_id`` may pay now (orders' internal API), or the Problem to answer."""
    try:
        order = await deps.orders.get_order(order_id)
    except UpstreamProblem as exc:
        if exc.status == 404:
            raise not_found("order") from None
        log.error("orders answered %s %s for order %s", exc.status, exc.code, order_id)
        raise service_unavailable("Orders cannot be read now", retry_after=None) from None
    except UpstreamUnavailable:
        raise service_unavailable("Orders cannot be read now; try again") from None
    if order.buyer_id != buyer_id:
        raise not_found("order")  # someone else's order: as if it did not exist
    if order.status != PAYABLE_ORDER_STATUS:
        raise invalid_state(f"The order is {order.status}, not payable")
    expires_at = _parse_time(order.expires_at)
    if expires_at is not None and expires_at <= utcnow():
        raise invalid_state("The order's payment time is over")
    return order


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


async def send_confirm(core: Core, p: Payment) -> Payment:
    """Send ``p`` to the PG (its confirm, or its billing key's charge: send_to_pg, under an
    Idempotency-Key derived from its id) and record the outcome."""
    try:
        result = await send_to_pg(core, p)
    except (PgDeclined, PgNotFound) as exc:
        return await fail(core, p, exc.code, exc.message)
    except PgAuthError:
        log.error("the PG refused our secret key; check SNAPSHOE_PG_SECRET_KEY")
        async with core.sessions.begin() as session:
            await repo.delete_in_progress(session, p.id)
        raise service_unavailable("Payments are unavailable", retry_after=None) from None
    except PgError as exc:  # PgUnknownResult and anything we cannot read: never a failure
        log.warning("payment %s (%s) has no definitive result: %s", p.id, p.method, exc)
        return await mark_unknown(core, p, exc.code)
    return await settle(core, p, result)


async def settle(core: Core, p: Payment, result: PgPayment) -> Payment:
    """Apply what the PG says about an unresolved payment (a billing payment learns its
    payment key from it)."""
    if not p.matches(result.payment_key, result.order_id, result.total_amount):
        log.error("PG payment %s does not match payment %s", result.payment_key, p.id)
        return await mark_unknown(core, p, "MISMATCH")
    if result.status in PG_APPROVED:
        return await approve(core, p, result)
    if result.status in PG_NOT_CHARGED:
        failure = result.failure
        code = failure.code if failure else result.status.value
        message = (failure.message if failure else None) or f"The PG says {result.status.value}"
        return await fail(core, p, code, message)
    return await mark_unknown(core, p, result.status.value)


async def approve(core: Core, p: Payment, result: PgPayment) -> Payment:
    now = utcnow()
    approved_at = as_utc(result.approved_at) if result.approved_at else now
    # A billing payment's key is known from the PG's answer on.
    learned = {} if p.key_known else {"payment_key": result.payment_key}
    async with core.sessions.begin() as session:
        if await repo.transition(
            session,
            p.id,
            UNRESOLVED,
            Status.DONE,
            now,
            approved_at=approved_at,
            pg_code=None,
            pg_message=None,
            next_check_at=None,
            **learned,
        ):
            PAYMENTS.labels("approved").inc()
            await add_to_outbox(
                session,
                outbox,
                PaymentApproved(
                    payment_id=p.id,
                    order_id=p.order_id,
                    buyer_id=p.buyer_id,
                    amount=p.amount,
                    approved_at=approved_at,
                ),
            )
        return await repo.reread(session, p.id)


async def fail(core: Core, p: Payment, code: str, message: str) -> Payment:
    now = utcnow()
    async with core.sessions.begin() as session:
        if await repo.transition(
            session,
            p.id,
            UNRESOLVED,
            Status.ABORTED,
            now,
            pg_code=code[:64],
            pg_message=(message or code)[:255],
            next_check_at=None,
        ):
            PAYMENTS.labels("failed").inc()
            await add_to_outbox(
                session,
                outbox,
                PaymentFailed(
                    payment_id=p.id,
                    order_id=p.order_id,
                    buyer_id=p.buyer_id,
                    code=code,
                    message=message or code,
                ),
            )
        return await repo.reread(session, p.id)


async def mark_unknown(core: Core, p: Payment, code: str) -> Payment:
    now = utcnow()
    async with core.sessions.begin() as session:
        if await repo.transition(
            session,
            p.id,
            (Status.IN_PROGRESS,),
            Status.UNKNOWN,
            now,
            pg_code=code[:64],
            next_check_at=now + FIRST_CHECK_DELAY,
        ):
            PAYMENTS.labels("unknown").inc()
        return await repo.reread(session, p.id)


# --- queries ----------------------------------------------------------------------------------


async def get_payment(deps: Deps, *, buyer_id: str, payment_id: str) -> Payment:
    async with deps.sessions.begin() as session:
        p = await repo.get(session, payment_id)
    if p is None or p.buyer_id != buyer_id:
        raise not_found("payment")
    return p


# --- reconciliation ---------------------------------------------------------------------------


async def reconcile(core: Core, payment_id: str) -> Payment | None:
    """Resolve one UNKNOWN (or stale IN_PROGRESS) payment by asking the PG. None if another
    reconciler holds it or it is not due."""
    now = utcnow()
    async with core.sessions.begin() as session:
        if not await repo.claim_check(session, payment_id, now, now + CLAIM_LEASE):
            return None
        p = await repo.get(session, payment_id)
    assert p is not None
    try:
        found = await _pg_payment(core, p)
        if found is not None and found.is_final:
            return await settle(core, p, found)
        # The PG has no final outcome: our confirm (or billing charge) never took effect, or is
        # still in flight. Sending it again under the SAME Idempotency-Key cannot charge twice.
        try:
            result = await send_to_pg(core, p)
        except (PgDeclined, PgNotFound) as exc:
            return await fail(core, p, exc.code, exc.message)
        return await settle(core, p, result)
    except PgError as exc:
        log.info("payment %s still unknown (%s); next check later", p.id, exc)
    except Exception:
        log.exception("reconciling payment %s failed", p.id)
    async with core.sessions.begin() as session:
        await repo.schedule_check(session, p.id, utcnow() + backoff(p.attempts))
        return await repo.reread(session, p.id)


async def send_to_pg(core: Core, p: Payment) -> PgPayment:
    """Send ``p``'s charge to the PG under its own Idempotency-Key (derived from its id): the
    confirm of its payment key, or the charge of its billing key."""
    if p.method is Method.BILLING:
        return await core.pg.charge_billing_key(
            p.billing_key or "",
            p.buyer_id,
            p.amount,
            p.order_id,
            p.order_name or p.order_id,
            billing_idempotency_key(p.id),
        )
    return await core.pg.confirm(p.payment_key, p.order_id, p.amount, confirm_idempotency_key(p.id))


async def _pg_payment(core: Core, p: Payment) -> PgPayment | None:
    """The PG's view of ``p``: by order id (as the design says), by payment key if the order's
    latest payment at the PG is another one. None if the PG has no such payment. A billing
    payment whose key is not known yet is only found by order id."""
    try:
        found = await core.pg.get_by_order_id(p.order_id)
        if p.matches(found.payment_key, found.order_id, found.total_amount):
            return found
    except PgNotFound:
        pass
    if not p.key_known:
        return None
    try:
        return await core.pg.get_by_payment_key(p.payment_key)
    except PgNotFound:
        return None


async def reconcile_due(core: Core, limit: int = 50) -> int:
    async with core.sessions.begin() as session:
        ids = await repo.due_unresolved(session, utcnow(), limit)
    done = 0
    for payment_id in ids:
        if await reconcile(core, payment_id) is not None:
            done += 1
    return done


# --- webhook ----------------------------------------------------------------------------------


async def webhook(core: Core, raw: bytes) -> dict[str, Any]:
    """A PG notification is a hint: the payment is re-read from the PG by its key and the same
    approve/fail paths run. Nothing in the body is trusted beyond which payment to look at."""
    try:
        hint = parse_webhook(raw)
    except PgError:
        raise Problem(
            400, "invalid_webhook", detail="Not a PAYMENT_STATUS_CHANGED notification"
        ) from None
    async with core.sessions.begin() as session:
        p = await repo.by_payment_key(session, hint.payment_key)
        if p is None and hint.payment_key:
            # A billing charge's webhook can come before its answer told us the key.
            p = await repo.by_order(session, hint.order_id)
            if p is not None and p.key_known:
                p = None
    if p is None or p.order_id != hint.order_id:
        return {"status": "ignored"}
    if p.status not in UNRESOLVED and p.status is not Status.DONE:
        return {"status": "ok", "payment_status": p.status.value}
    try:
        found = await core.pg.get_by_payment_key(hint.payment_key)
    except PgError as exc:
        # The reconciler (or the recheck of DONE payments) will ask again; a hint we could not
        # follow is not an error.
        log.info("webhook for %s: the PG could not be read (%s)", p.id, exc)
        return {"status": "deferred", "payment_status": p.status.value}
    if p.status is Status.DONE:
        # Resolved here, but the PG may have refunded it since (dashboard, chargeback).
        current = await record_pg_cancels(core, p, found)
        return {"status": "ok", "payment_status": current.status.value}
    if not found.is_final:
        return {"status": "ok", "payment_status": p.status.value}
    current = await settle(core, p, found)
    return {"status": "ok", "payment_status": current.status.value}
