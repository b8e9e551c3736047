"""Payment commands. Each opens its own short transactions; no transaction is ever held open
across a call to the PG or to another service.

The approve and fail paths (:func:`approve`, :func:`fail`) are shared by the confirm endpoint,
the reconciler and the webhook: each is one conditional update from an unresolved status plus
its outbox event, so whichever of them gets there first publishes the one event, and the others
see a row count of 0 and read what happened.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.kernel.clients import UpstreamProblem, UpstreamUnavailable
from snapshoe.kernel.contracts.orders import OrderCancelled, OrderRefundRequired
from snapshoe.kernel.contracts.payments import (
    PaymentApproved,
    PaymentFailed,
    PaymentRefunded,
    PaymentRefundedAtPg,
)
from snapshoe.kernel.errors import Problem, not_found
from snapshoe.kernel.idempotency import fingerprint
from snapshoe.kernel.messaging import add_to_outbox
from snapshoe.payments import repository as repo
from snapshoe.payments.domain import (
    CLAIM_LEASE,
    FIRST_CHECK_DELAY,
    PAYABLE_ORDER_STATUS,
    STALE_IN_PROGRESS_GRACE,
    UNRESOLVED,
    Payment,
    RefundStatus,
    Status,
    as_utc_naive,
    backoff,
    confirm_idempotency_key,
    new_payment_id,
    new_refund_id,
    refund_idempotency_key,
    sweep_verdict,
    utcnow,
)
from snapshoe.payments.pg import (
    PgAuthError,
    PgDeclined,
    PgError,
    PgNotFound,
    PgPayment,
    PgStatus,
    parse_webhook,
)
from snapshoe.payments.tables import outbox

if TYPE_CHECKING:
    from snapshoe.payments.bootstrap import Core, Deps, Orders

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

    order = await _payable_order(deps, order_id, buyer_id)
    if amount != int(order["total_amount"]):
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
    if p.payment_key != payment_key:
        raise invalid_state("This order already has a payment")
    if p.amount != amount:
        raise Problem(
            400, "amount_mismatch", "Amount mismatch", "The amount does not match the order"
        )
    return answer(p)


async def _payable_order(deps: Deps, order_id: str, buyer_id: str) -> dict[str, Any]:
    try:
        order = await deps.orders.get_order(order_id)
    except UpstreamProblem as exc:
        if exc.status == 404:
            raise not_found("order") from None
        log.error("orders answered %s %s for order %s", exc.status, exc.code, order_id)
        raise Problem(503, "service_unavailable", detail="Orders cannot be read now") from None
    except UpstreamUnavailable:
        raise Problem(
            503,
            "service_unavailable",
            detail="Orders cannot be read now; try again",
            headers={"Retry-After": "1"},
        ) from None
    if order.get("buyer_id") != buyer_id:
        raise not_found("order")  # someone else's order: as if it did not exist
    if order.get("status") != PAYABLE_ORDER_STATUS:
        raise invalid_state(f"The order is {order.get('status')}, not payable")
    expires_at = _parse_time(order.get("expires_at"))
    if expires_at is not None and expires_at <= utcnow():
        raise invalid_state("The order's payment time is over")
    return order


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return as_utc_naive(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


async def send_confirm(core: Core, p: Payment) -> Payment:
    """Confirm ``p`` at the PG (Idempotency-Key derived from its id) and record the outcome."""
    try:
        result = await core.pg.confirm(
            p.payment_key, p.order_id, p.amount, confirm_idempotency_key(p.id)
        )
    except (PgDeclined, PgNotFound) as exc:
        return await fail(core, p, exc.code, exc.message)
    except PgAuthError:
        log.error("the PG refused our secret key; check SNAPSHOE_PG_SECRET_KEY")
        async with core.sessions.begin() as session:
            await repo.delete_in_progress(session, p.id)
        raise Problem(503, "service_unavailable", detail="Payments are unavailable") from None
    except PgError as exc:  # PgUnknownResult and anything we cannot read: never a failure
        log.warning("confirm of %s has no definitive result: %s", p.id, exc)
        return await mark_unknown(core, p, exc.code)
    return await settle(core, p, result)


async def settle(core: Core, p: Payment, result: PgPayment) -> Payment:
    """Apply what the PG says about an unresolved payment."""
    if result.payment_key != p.payment_key or result.order_id != p.order_id:
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
    approved_at = as_utc_naive(result.approved_at) if result.approved_at else now
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
        ):
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
        return await _reread(session, p.id)


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
        return await _reread(session, p.id)


async def mark_unknown(core: Core, p: Payment, code: str) -> Payment:
    now = utcnow()
    async with core.sessions.begin() as session:
        await repo.transition(
            session,
            p.id,
            (Status.IN_PROGRESS,),
            Status.UNKNOWN,
            now,
            pg_code=code[:64],
            next_check_at=now + FIRST_CHECK_DELAY,
        )
        return await _reread(session, p.id)


async def _reread(session: AsyncSession, payment_id: str) -> Payment:
    current = await repo.get(session, payment_id)
    assert current is not None
    return current


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
        # The PG has no final outcome: our confirm never took effect (or is still in flight).
        # Sending it again under the same Idempotency-Key cannot charge twice.
        try:
            result = await core.pg.confirm(
                p.payment_key, p.order_id, p.amount, confirm_idempotency_key(p.id)
            )
        except (PgDeclined, PgNotFound) as exc:
            return await fail(core, p, exc.code, exc.message)
        return await settle(core, p, result)
    except PgError as exc:
        log.info("payment %s still unknown (%s); next check later", p.id, exc)
    except Exception:
        log.exception("reconciling payment %s failed", p.id)
    async with core.sessions.begin() as session:
        await repo.schedule_check(session, p.id, utcnow() + backoff(p.attempts))
        return await _reread(session, p.id)


async def _pg_payment(core: Core, p: Payment) -> PgPayment | None:
    """The PG's view of ``p``: by order id (as the design says), by payment key if the order's
    latest payment at the PG is another one. None if the PG has no such payment."""
    try:
        found = await core.pg.get_by_order_id(p.order_id)
        if found.payment_key == p.payment_key:
            return found
    except PgNotFound:
        pass
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
    if p is None or p.order_id != hint.order_id:
        return {"status": "ignored"}
    if p.status not in UNRESOLVED and p.status is not Status.DONE:
        return {"status": "ok", "payment_status": p.status.value}
    try:
        found = await core.pg.get_by_payment_key(p.payment_key)
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


# --- refunds made at the PG (item 6 of issue 12) --------------------------------------------

PG_REFUNDED = (PgStatus.CANCELED, PgStatus.PARTIAL_CANCELED)


async def record_pg_cancels(core: Core, p: Payment, found: PgPayment) -> Payment:
    """Record the cancels the PG reports on a DONE payment that SnapShoe did not ask for, and
    publish ``PaymentRefundedAtPg`` once per newly seen batch of them. A full cancel moves the
    payment to CANCELED (orders then stops fulfilment); a partial one keeps it DONE.

    Idempotent: each PG cancel is one ``pg_cancels`` row (INSERT IGNORE on its transaction
    key), and the event goes out only with newly inserted rows, in the same transaction."""
    if found.payment_key != p.payment_key or found.order_id != p.order_id:
        log.error("PG payment %s does not match payment %s", found.payment_key, p.id)
        return p
    if found.status not in PG_REFUNDED or not found.cancels:
        return p
    now = utcnow()
    async with core.sessions.begin() as session:
        if await repo.refund_of_payment(session, p.id) is not None:
            # Our own refund (its webhook can beat process_refund's bookkeeping): the refund
            # worker records it; the order is already cancelled or expired.
            return await _reread(session, p.id)
        added = 0
        for n, cancel in enumerate(found.cancels):
            at = as_utc_naive(cancel.canceled_at) if cancel.canceled_at else now
            if await repo.insert_pg_cancel(
                session,
                payment_id=p.id,
                transaction_key=cancel.transaction_key or f"#{n}",
                amount=cancel.cancel_amount,
                reason=cancel.cancel_reason or "cancelled at the PG",
                canceled_at=at,
                now=now,
            ):
                added += cancel.cancel_amount
        if not added:
            return await _reread(session, p.id)
        refunded = found.refunded_amount
        last = found.cancels[-1]
        refunded_at = as_utc_naive(last.canceled_at) if last.canceled_at else now
        full = found.status is PgStatus.CANCELED
        if full:
            await repo.transition(
                session,
                p.id,
                (Status.DONE,),
                Status.CANCELED,
                now,
                canceled_at=refunded_at,
                refunded_amount=refunded,
            )
        else:
            await repo.set_refunded_amount(session, p.id, refunded, now)
        log.warning(
            "payment %s of order %s was refunded at the PG (%s of %s, %s)",
            p.id,
            p.order_id,
            refunded,
            p.amount,
            found.status.value,
        )
        await add_to_outbox(
            session,
            outbox,
            PaymentRefundedAtPg(
                payment_id=p.id,
                order_id=p.order_id,
                buyer_id=p.buyer_id,
                amount=added,
                refunded_amount=refunded,
                balance_amount=found.balance_amount,
                full=full,
                refunded_at=refunded_at,
                reason=(last.cancel_reason or "cancelled at the PG")[:200],
            ),
        )
        return await _reread(session, p.id)


async def recheck_recent(core: Core) -> int:
    """Re-read at the PG a batch of DONE payments approved within ``pg_recheck_days`` (least
    recently read first), for refunds no webhook brought. Returns how many were read."""
    s = core.settings
    now = utcnow()
    async with core.sessions.begin() as session:
        ids = await repo.recent_done(
            session, now - timedelta(days=s.pg_recheck_days), s.pg_recheck_batch
        )
        # Marked first: a payment the PG cannot answer for goes to the back of the queue.
        await repo.mark_pg_checked(session, ids, now)
    read = 0
    for payment_id in ids:
        async with core.sessions.begin() as session:
            p = await repo.get(session, payment_id)
        if p is None or p.status is not Status.DONE:
            continue
        try:
            found = await core.pg.get_by_payment_key(p.payment_key)
        except PgError as exc:
            log.info("recheck of %s: the PG could not be read (%s)", p.id, exc)
            continue
        read += 1
        await record_pg_cancels(core, p, found)
    return read


# --- the sweeper: no charge without an order (item 12 of issue 12) ---------------------------


async def sweep(core: Core, orders: Orders) -> int:
    """Refund every DONE payment whose order can no longer be fulfilled (EXPIRED, CANCELLED,
    PAYMENT_FAILED, paid by another payment, or unknown to orders), approved over
    ``refund_sweep_grace_seconds`` ago. Returns how many refunds it asked for.

    It only records the refund (one per payment: UNIQUE(payment_id)); the refund worker cancels
    at the PG under the refund's Idempotency-Key, so sweepers running at once refund once."""
    s = core.settings
    now = utcnow()
    async with core.sessions.begin() as session:
        ids = await repo.sweep_candidates(
            session, now - timedelta(seconds=s.refund_sweep_grace_seconds), s.refund_sweep_batch
        )
    asked = 0
    for payment_id in ids:
        async with core.sessions.begin() as session:
            p = await repo.get(session, payment_id)
        if p is None or p.status is not Status.DONE:
            continue
        try:
            order: dict[str, Any] | None = await orders.get_order(p.order_id)
        except UpstreamProblem as exc:
            if exc.status != 404:
                log.warning("sweeper: orders answered %s for %s", exc.status, p.order_id)
                continue
            order = None
        except UpstreamUnavailable as exc:
            log.info("sweeper: orders unavailable (%s); next pass", exc)
            return asked
        verdict = sweep_verdict(order, p.id)
        async with core.sessions.begin() as session:
            if verdict == "refund":
                status = "unknown" if order is None else str(order.get("status")).lower()
                reason = f"sweeper: order {status}"
                if await repo.insert_refund_once(
                    session, refund_id=new_refund_id(), payment=p, reason=reason, now=utcnow()
                ):
                    asked += 1
                    log.warning("sweeper: refunding payment %s (%s)", p.id, reason)
            await repo.mark_order_checked(session, p.id, utcnow(), fulfilled=verdict == "fulfilled")
    return asked


# --- refunds ----------------------------------------------------------------------------------


async def on_order_cancelled(session: AsyncSession, body: dict[str, Any]) -> None:
    event = OrderCancelled.model_validate(body)
    if not event.refund_required:
        return
    p = await repo.by_order(session, event.order_id)
    if p is None:
        log.error("order %s cancelled with a refund, but it has no payment", event.order_id)
        return
    await _request_refund(session, p, f"order cancelled ({event.previous_status})")


async def on_refund_required(session: AsyncSession, body: dict[str, Any]) -> None:
    event = OrderRefundRequired.model_validate(body)
    p = await repo.get(session, event.payment_id) or await repo.by_order(session, event.order_id)
    if p is None or p.order_id != event.order_id:
        log.error("refund required for unknown payment %s", event.payment_id)
        return
    await _request_refund(session, p, f"order not fulfillable: {event.reason}")


async def _request_refund(session: AsyncSession, p: Payment, reason: str) -> None:
    """Record the refund to make (in the consumer's transaction, with its inbox row); the
    refund worker calls the PG outside any transaction."""
    if p.status is Status.ABORTED:
        log.info("no refund for payment %s: it was never charged", p.id)
        return
    created = await repo.insert_refund_once(
        session, refund_id=new_refund_id(), payment=p, reason=reason, now=utcnow()
    )
    if not created:
        log.info("payment %s already has a refund", p.id)


async def process_refund(core: Core, refund_id: str) -> RefundStatus | None:
    """Cancel the payment at the PG (Idempotency-Key = refund id). The refund is DONE only when
    the PG says the payment is canceled; an unknown result is retried with backoff."""
    now = utcnow()
    async with core.sessions.begin() as session:
        if not await repo.claim_refund(session, refund_id, now, now + CLAIM_LEASE):
            return None
        refund = await repo.get_refund(session, refund_id)
        assert refund is not None
        p = await repo.get(session, refund.payment_id)
    assert p is not None
    if p.status in UNRESOLVED:  # the approval is not recorded yet: wait for it
        return await _retry_refund(core, refund_id, refund.attempts)
    if p.status is Status.ABORTED:
        async with core.sessions.begin() as session:
            await repo.finish_refund(
                session,
                refund_id,
                RefundStatus.FAILED,
                utcnow(),
                pg_code="NOT_CHARGED",
                pg_message="The payment was never charged",
            )
        return RefundStatus.FAILED
    try:
        result = await core.pg.cancel(
            p.payment_key, refund.reason, refund_idempotency_key(refund.id)
        )
    except (PgDeclined, PgNotFound) as exc:
        log.error("the PG refused refund %s of payment %s: %s", refund.id, p.id, exc)
        async with core.sessions.begin() as session:
            await repo.finish_refund(
                session,
                refund_id,
                RefundStatus.FAILED,
                utcnow(),
                pg_code=exc.code[:64],
                pg_message=(exc.message or exc.code)[:255],
            )
        return RefundStatus.FAILED
    except PgError as exc:
        log.warning("refund %s has no definitive result (%s); retrying later", refund.id, exc)
        return await _retry_refund(core, refund_id, refund.attempts)
    if result.status is not PgStatus.CANCELED:
        log.warning("refund %s: the PG says %s; retrying later", refund.id, result.status)
        return await _retry_refund(core, refund_id, refund.attempts)
    canceled_at = utcnow()
    if result.cancels and result.cancels[-1].canceled_at:
        canceled_at = as_utc_naive(result.cancels[-1].canceled_at)
    now = utcnow()
    async with core.sessions.begin() as session:
        if await repo.finish_refund(
            session, refund_id, RefundStatus.DONE, now, refunded_at=canceled_at
        ):
            await repo.transition(
                session,
                p.id,
                (Status.DONE,),
                Status.CANCELED,
                now,
                canceled_at=canceled_at,
                refunded_amount=result.refunded_amount,
            )
            await add_to_outbox(
                session,
                outbox,
                PaymentRefunded(
                    payment_id=p.id,
                    order_id=p.order_id,
                    buyer_id=p.buyer_id,
                    amount=refund.amount,
                    refunded_at=canceled_at,
                ),
            )
    return RefundStatus.DONE


async def _retry_refund(core: Core, refund_id: str, attempts: int) -> RefundStatus:
    async with core.sessions.begin() as session:
        await repo.schedule_refund(session, refund_id, utcnow() + backoff(attempts), utcnow())
    return RefundStatus.PENDING


async def refunds_due(core: Core, limit: int = 50) -> int:
    async with core.sessions.begin() as session:
        ids = await repo.due_refunds(session, utcnow(), limit)
    done = 0
    for refund_id in ids:
        if await process_refund(core, refund_id) is not None:
            done += 1
    return done
