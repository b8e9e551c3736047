"""The draw result mail: every entrant of a draw is told its result, from products'
``draw.entry_decided`` event (kernel.contracts.draws.DrawEntryDecided).

The consumer (consumers.draw_mail_handlers, queue ``users.draw_mail``) never sends: it looks the
buyer up and queues a ``draw_result`` job on the account mail queue (users.mail); the users
worker sends it (:func:`send_draw_result`), retried until the SMTP server takes it or the job's
deadline (:data:`DEADLINE_SECONDS`, 24 h: a result is not time-critical) passes.
The mail is in the buyer's language only (``users.lang``, Korean or English, read when the
event is consumed).

Neither lost nor doubled across a crash. The job is queued inside the consumer's inbox
transaction, before it commits, and the queueing is keyed by the event id
(MailQueue.enqueue_once: one atomic Redis script that appends the job only if the event's
marker is absent, then sets the marker). So a crash after the append but before the inbox
commit loses nothing (the job is in the queue already) and its redelivery appends nothing (the
marker is there); a crash before the append leaves neither, and the redelivery queues the mail.
The marker lives as long as the inbox keeps the event id (``SNAPSHOE_EVENT_RETENTION_DAYS``),
so within that time no redelivery, whether before or after the commit, mails twice. What is
left is the mail queue's own at-least-once send (a worker dying between the SMTP hand-off and
the stream ack sends again), as for every account mail.

Only a verified account is mailed. An unknown buyer (the account was deleted, or a benchmark
made the entry without one) or an unverified one (its address was never proven, so the result
and its order id are not told to whoever typed it) is logged at info and the event is done:
acked, never retried.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from snapshoe.kernel.contracts.draws import DrawEntryDecided
from snapshoe.users import repository as repo
from snapshoe.users.domain import DEFAULT_LANG, Lang

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from snapshoe.users.mail import Mailer, MailQueue

log = logging.getLogger("snapshoe.users.draw_mail")

DRAW_RESULT = "draw_result"  # the mail job's kind (workers.run_mail_job)
DEADLINE_SECONDS = 24 * 3600

SUBJECTS = {
    "ko": {
        "won": "[SnapShoe] 드로우 당첨: {name}",
        "lost": "[SnapShoe] 드로우 미당첨: {name}",
        "payment_failed": "[SnapShoe] 드로우 결제 실패: {name}",
    },
    "en": {
        "won": "[SnapShoe] Draw result: you won {name}",
        "lost": "[SnapShoe] Draw result: not drawn for {name}",
        "payment_failed": "[SnapShoe] Draw result: payment declined for {name}",
    },
}


# The text (pure)


def _one_line(text: str) -> str:
    """Whitespace (newlines included) folded to single spaces: safe in a subject header."""
    return " ".join(text.split())


def _korean(e: DrawEntryDecided, name: str, product: str) -> list[str]:
    hello = f"{name}님, 안녕하세요." if name else "안녕하세요."
    if e.state == "won":
        result = [
            f"{product} 드로우에 당첨되셨습니다.",
            "",
            f"- 사이즈: {e.size}",
            "- 등록하신 카드로 결제되었습니다.",
            f"- 주문 번호: {e.order_id or '-'}",
            "- 주문 상태: 준비중 (PREPARING)",
        ]
    elif e.state == "lost":
        result = [
            f"아쉽게도 이번 {product} 드로우에는 당첨되지 않으셨습니다.",
            "",
            f"- 응모 사이즈: {e.size}",
            "- 결제된 금액은 없습니다.",
        ]
    else:
        result = [
            f"{product} 드로우에 추첨되셨지만, 등록하신 카드의 결제가 거절되었습니다.",
            "",
            f"- 응모 사이즈: {e.size}",
            "- 결제된 금액은 없습니다.",
            "- 이 사이즈의 상품은 다음 순번의 응모자에게 넘어갔습니다.",
        ]
    return [
        hello,
        "",
        *result,
        "",
        "추첨 확인 방법",
        f"- 내 응모 번호: {e.entry_id}",
        f"- 공개된 시드(seed): {e.seed}",
        f"- 커밋먼트(commitment, 응모 시작 때 공개된 시드의 SHA-256): {e.commitment}",
        f"- 추첨 전체(모든 응모의 순위): GET /api/products/{e.product_id}/draw",
        f"- 직접 검증하기: snapshoe draws verify {e.product_id}",
    ]


def _english(e: DrawEntryDecided, name: str, product: str) -> list[str]:
    hello = f"Hello {name}," if name else "Hello,"
    if e.state == "won":
        result = [
            f"You won the draw for {product}.",
            "",
            f"- Size: {e.size}",
            "- Your card has been charged.",
            f"- Order: {e.order_id or '-'}",
            "- Order status: PREPARING",
        ]
    elif e.state == "lost":
        result = [
            f"You were not drawn this time for {product}.",
            "",
            f"- Size entered: {e.size}",
            "- Nothing was charged.",
        ]
    else:
        result = [
            f"You were drawn for {product}, but the charge to your card was declined.",
            "",
            f"- Size entered: {e.size}",
            "- Nothing was charged.",
            "- The pair went to the next entrant.",
        ]
    return [
        hello,
        "",
        *result,
        "",
        "How to check the draw",
        f"- Your entry: {e.entry_id}",
        f"- Revealed seed: {e.seed}",
        f"- Commitment (SHA-256 of the seed, published when entries opened): {e.commitment}",
        f"- The whole draw (every entry's rank): GET /api/products/{e.product_id}/draw",
        f"- Check it yourself: snapshoe draws verify {e.product_id}",
    ]


def draw_result_mail(
    event: DrawEntryDecided, name: str = "", lang: Lang = DEFAULT_LANG
) -> tuple[str, str]:
    """The subject and plain-text body of the result mail, in the buyer's language only."""
    product = _one_line(event.product_name)
    who = _one_line(name)
    subject = SUBJECTS[lang][event.state].format(name=product)
    text = _korean(event, who, product) if lang == "ko" else _english(event, who, product)
    return subject, "\n".join([*text, "", "SnapShoe"]) + "\n"


# The consumer's job: queue the mail, once per event


async def queue_draw_mail(
    session: AsyncSession,
    queue: MailQueue,
    event: DrawEntryDecided,
    *,
    marker_ttl_seconds: float,
) -> bool:
    """Queue the result mail of ``event`` to its buyer; runs in the consumer's inbox
    transaction, before its commit (see the module doc). False when nothing was queued: no
    verified account, or the event's job was queued already (a redelivery)."""
    user = await repo.user_by_id(session, event.buyer_id)
    if user is None or not user.email_verified:
        log.info(
            "draw result not mailed: %s",
            "no such account" if user is None else "the account is not verified",
            extra={"event_id": event.event_id, "entry_id": event.entry_id},
        )
        return False
    job = {
        "kind": DRAW_RESULT,
        "to": user.email,
        "name": user.name,
        "lang": user.lang,
        "draw": event.model_dump(mode="json"),
    }
    queued = await queue.enqueue_once(
        job,
        ttl_seconds=DEADLINE_SECONDS,
        once=f"draw_result:{event.event_id}",
        once_ttl_seconds=marker_ttl_seconds,
    )
    if not queued:
        log.info(
            "draw result mail was queued already (a redelivery)",
            extra={"event_id": event.event_id, "entry_id": event.entry_id},
        )
    return queued


# The worker's job: send it


async def send_draw_result(mailer: Mailer, job: dict[str, Any]) -> bool:
    """One ``draw_result`` job: True when sent (or undecodable: dropped), False to retry."""
    try:
        event = DrawEntryDecided.model_validate(job["draw"])
        to = str(job["to"])
    except (KeyError, TypeError, ValidationError):
        log.error("undecodable draw result job dropped", exc_info=True)
        return True
    lang: Lang = "en" if job.get("lang") == "en" else "ko"  # a job queued before: Korean
    subject, body = draw_result_mail(event, str(job.get("name") or ""), lang)
    return await mailer.send(to, subject, body)
