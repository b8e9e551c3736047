"""The buyer's order mail: an order placed (with its payment deadline), paid, shipped, delivered,
cancelled (or cancelled and refunded), and an admission from a waiting room, from the orders
service's ``order.*`` events and products' ``queue.admitted`` (kernel.contracts).

The same plan as the draw result mail (users.draw_mail, whose doc says why it is neither lost
nor doubled): the consumer (consumers.order_mail_handlers, queue ``users.order_mail``) looks the
buyer up and queues one ``order_mail`` job on the account mail queue, inside its inbox
transaction, keyed by the event id (MailQueue.enqueue_once); the users worker sends it
(:func:`send_order_mail`). The job carries the rendered subject and body, in the account's
language (``users.lang``) at the time the event was consumed.

Only a verified account is mailed; an unknown buyer (a benchmark's minted one, a deleted
account) or an unverified one is skipped, logged at debug (a drop's benchmark makes thousands),
and the event is done. A draw winner's order (``from_draw``) gets no "please pay" mail: the draw
result mail told its buyer, whose card was charged at once.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from snapshoe.kernel.clock import as_utc
from snapshoe.kernel.contracts.orders import (
    OrderCancelled,
    OrderDelivered,
    OrderPaid,
    OrderPlaced,
    OrderShipped,
)
from snapshoe.kernel.contracts.waiting_room import QueueAdmitted
from snapshoe.users import repository as repo
from snapshoe.users.order_mail_text import (
    ADMITTED,
    CANCELLED,
    DELIVERED,
    PAID,
    PLACED,
    REFUNDED,
    SHIPPED,
    OrderMail,
    render,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from snapshoe.users.mail import Mailer, MailQueue

log = logging.getLogger("snapshoe.users.order_mail")

ORDER_MAIL = "order_mail"  # the mail job's kind (workers.run_mail_job)
DEADLINE_SECONDS = 24 * 3600  # a status mail is not time-critical
MIN_DEADLINE_SECONDS = 60.0
# The order's status before a cancel that means it had been paid: refunded, by payments on
# ``refund_required``, or at the PG first (then ``refund_required`` is False).
PAID_STATUS = "PREPARING"


# From the event to what the mail tells (pure)


def _order_link(web_url: str, order_id: str) -> str:
    return f"{web_url.rstrip('/')}/orders/{order_id}"


def placed_mail(e: OrderPlaced, web_url: str) -> OrderMail:
    names = [line.product_name or "" for line in e.lines]
    first = next((n for n in names if n), "")
    others = {line.product_id for line in e.lines[1:] if line.product_id != e.lines[0].product_id}
    return OrderMail(
        PLACED,
        _order_link(web_url, e.order_id),
        order_id=e.order_id,
        product_name=first,
        more_lines=len(others) if first else 0,
        total_amount=e.total_amount,
        until=e.expires_at,
    )


def paid_mail(e: OrderPaid, web_url: str) -> OrderMail:
    return OrderMail(
        PAID,
        _order_link(web_url, e.order_id),
        order_id=e.order_id,
        product_name=e.product_name or "",
        total_amount=e.total_amount,
    )


def cancelled_mail(e: OrderCancelled, web_url: str) -> OrderMail:
    """ "Cancelled and refunded" only when money goes back (module constants)."""
    refunded = e.refund_required or e.previous_status == PAID_STATUS
    kind = REFUNDED if refunded else CANCELLED
    return OrderMail(kind, _order_link(web_url, e.order_id), order_id=e.order_id)


def admitted_mail(e: QueueAdmitted, web_url: str) -> OrderMail:
    return OrderMail(
        ADMITTED,
        f"{web_url.rstrip('/')}/products/{e.product_id}",
        product_name=e.product_name,
        until=e.admitted_until,
    )


def status_mail(kind: str, e: OrderShipped | OrderDelivered, web_url: str) -> OrderMail:
    return OrderMail(kind, _order_link(web_url, e.order_id), order_id=e.order_id)


def mail_of(body: dict[str, Any], web_url: str) -> tuple[str, str, OrderMail] | None:
    """The event id, buyer and mail of an event ``body`` of the order mail queue; None when
    the event calls for no mail (a draw's order placed)."""
    key = f"{body.get('event_type')}.v{body.get('version')}"
    if key == OrderPlaced.routing_key():
        placed = OrderPlaced.model_validate(body)
        if placed.from_draw:
            return None
        return placed.event_id, placed.buyer_id, placed_mail(placed, web_url)
    if key == OrderPaid.routing_key():
        paid = OrderPaid.model_validate(body)
        return paid.event_id, paid.buyer_id, paid_mail(paid, web_url)
    if key == OrderShipped.routing_key():
        shipped = OrderShipped.model_validate(body)
        return shipped.event_id, shipped.buyer_id, status_mail(SHIPPED, shipped, web_url)
    if key == OrderDelivered.routing_key():
        done = OrderDelivered.model_validate(body)
        return done.event_id, done.buyer_id, status_mail(DELIVERED, done, web_url)
    if key == OrderCancelled.routing_key():
        cancelled = OrderCancelled.model_validate(body)
        return cancelled.event_id, cancelled.buyer_id, cancelled_mail(cancelled, web_url)
    if key == QueueAdmitted.routing_key():
        admitted = QueueAdmitted.model_validate(body)
        return admitted.event_id, admitted.buyer_id, admitted_mail(admitted, web_url)
    raise ValueError(f"not an order mail event: {key}")


def deadline_seconds(mail: OrderMail, now: float) -> float | None:
    """How long the job may wait to be sent; None when it is too late to be worth sending
    (an admission or a payment deadline already past)."""
    if mail.kind not in (PLACED, ADMITTED) or mail.until is None:
        return DEADLINE_SECONDS
    left = as_utc(mail.until).timestamp() - now
    if left <= 0:
        return None
    return min(DEADLINE_SECONDS, max(MIN_DEADLINE_SECONDS, left))


# The consumer's job: queue the mail, once per event


async def queue_order_mail(
    session: AsyncSession,
    queue: MailQueue,
    body: dict[str, Any],
    *,
    web_url: str,
    marker_ttl_seconds: float,
) -> bool:
    """Queue the mail of the event ``body`` to its buyer, in the consumer's inbox transaction
    (before its commit). False when nothing was queued: no mail for this event, no verified
    account, too late, or the event's job was queued already (a redelivery)."""
    found = mail_of(body, web_url)
    if found is None:
        return False
    event_id, buyer_id, mail = found
    ttl = deadline_seconds(mail, time.time())
    user = await repo.user_by_id(session, buyer_id)
    if user is None or not user.email_verified or ttl is None:
        why = "no such account" if user is None else "not verified or too late"
        log.debug("%s mail not sent: %s", mail.kind, why, extra={"event_id": event_id})
        return False
    subject, text = render(mail, "en" if user.lang == "en" else "ko", user.name)
    job = {"kind": ORDER_MAIL, "to": user.email, "subject": subject, "body": text}
    queued = await queue.enqueue_once(
        job, ttl_seconds=ttl, once=f"order_mail:{event_id}", once_ttl_seconds=marker_ttl_seconds
    )
    if not queued:
        log.info(
            "%s mail was queued already (a redelivery)", mail.kind, extra={"event_id": event_id}
        )
    return queued


# The worker's job: send it


async def send_order_mail(mailer: Mailer, job: dict[str, Any]) -> bool:
    """One ``order_mail`` job: True when sent (or undecodable: dropped), False to retry."""
    try:
        to, subject, text = str(job["to"]), str(job["subject"]), str(job["body"])
    except (KeyError, TypeError):
        log.error("undecodable order mail job dropped")
        return True
    return await mailer.send(to, subject, text)
