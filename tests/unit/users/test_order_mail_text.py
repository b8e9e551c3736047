"""The buyer's order mail (users.order_mail_text, users.order_mail): every kind exists in both
languages, each mail in its language only (subject and body), with the facts of its event;
from an event to its mail (a cancel is "refunded" only when money goes back; a draw's order
placed is not mailed); and the worker's side of a queued job."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from snapshoe.kernel.contracts.orders import (
    OrderCancelled,
    OrderDelivered,
    OrderLine,
    OrderPaid,
    OrderPlaced,
    OrderShipped,
)
from snapshoe.kernel.contracts.waiting_room import QueueAdmitted
from snapshoe.users.mail import Mailer
from snapshoe.users.order_mail import (
    DEADLINE_SECONDS,
    ORDER_MAIL,
    deadline_seconds,
    mail_of,
    send_order_mail,
)
from snapshoe.users.order_mail_text import (
    ADMITTED,
    CANCELLED,
    KINDS,
    PLACED,
    REFUNDED,
    OrderMail,
    render,
)

HANGUL = re.compile("[\uac00-\ud7a3]")
UNTIL = datetime(2026, 12, 24, 3, 30, tzinfo=UTC)  # 12:30 in Korea
WEB = "https://shop.example"


def sample(kind: str) -> OrderMail:
    if kind == ADMITTED:
        return OrderMail(kind, f"{WEB}/products/p-1", product_name="Air Max 1", until=UNTIL)
    return OrderMail(
        kind,
        f"{WEB}/orders/o-1",
        order_id="o-1",
        product_name="Air Max 1",
        total_amount=189000,
        until=UNTIL if kind == PLACED else None,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_every_mail_exists_in_korean_and_in_english_only(kind: str) -> None:
    mail = sample(kind)
    ko_subject, ko_body = render(mail, "ko", "김민준")
    en_subject, en_body = render(mail, "en", "Minjun Kim")
    assert ko_subject.startswith("[SnapShoe] ")
    assert en_subject.startswith("[SnapShoe] ")
    assert ko_subject != en_subject
    assert HANGUL.search(ko_subject)
    assert ko_body.startswith("김민준님, 안녕하세요.\n")
    assert "Hello" not in ko_body
    assert not HANGUL.search(en_subject)
    assert not HANGUL.search(en_body)
    assert en_body.startswith("Hello Minjun Kim,\n")
    for subject, body in ((ko_subject, ko_body), (en_subject, en_body)):
        assert "\n" not in subject
        assert body.endswith("SnapShoe\n")
        assert mail.link in body
        if kind != ADMITTED:
            assert "o-1" in body


def test_each_kind_says_its_own_thing() -> None:
    subjects = {k: (render(sample(k), "ko")[0], render(sample(k), "en")[0]) for k in KINDS}
    assert len({ko for ko, _ in subjects.values()}) == len(KINDS)
    assert len({en for _, en in subjects.values()}) == len(KINDS)
    assert subjects[PLACED][1] == "[SnapShoe] Order confirmed"
    assert subjects[REFUNDED][1] == "[SnapShoe] Your order was cancelled and refunded"
    assert subjects[CANCELLED][1] == "[SnapShoe] Your order was cancelled"
    assert "환불" in subjects[REFUNDED][0]
    assert "환불" not in subjects[CANCELLED][0]
    assert subjects[ADMITTED][1] == "[SnapShoe] It's your turn: Air Max 1"


def test_the_placed_mail_gives_the_total_and_the_payment_deadline() -> None:
    _, ko = render(sample(PLACED), "ko")
    assert "189,000원" in ko
    assert "Air Max 1" in ko
    assert "2026-12-24 12:30 (KST)" in ko
    _, en = render(sample(PLACED), "en")
    assert "KRW 189,000" in en
    assert "Pay by: 2026-12-24 12:30 KST (03:30 UTC)" in en
    _, en = render(sample(ADMITTED), "en")
    assert "Order by: 2026-12-24 12:30 KST" in en
    assert f"Order now: {WEB}/products/p-1" in en


def test_names_and_products_never_break_the_subject() -> None:
    mail = OrderMail(ADMITTED, "/products/p", product_name="Dunk\r\nBcc: x@evil.test")
    for lang in ("ko", "en"):
        subject, _ = render(mail, lang)  # type: ignore[arg-type]
        assert "\n" not in subject
        assert "\r" not in subject
    assert render(mail, "ko")[1].startswith("안녕하세요.\n")
    assert render(mail, "en")[1].startswith("Hello,\n")


# From the event to the mail


def placed(**kw: Any) -> OrderPlaced:
    lines = [
        OrderLine(item_id="i1", product_id="p1", quantity=1, unit_price=100, product_name="A"),
        OrderLine(item_id="i2", product_id="p2", quantity=1, unit_price=50, product_name="B"),
    ]
    fields: dict[str, Any] = {
        "order_id": "o-1",
        "buyer_id": "b-1",
        "total_amount": 150,
        "lines": lines,
        "expires_at": UNTIL,
    }
    return OrderPlaced(**{**fields, **kw})


def body(event: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(event.to_message()))
    return loaded


def test_each_event_has_its_mail() -> None:
    event = placed()
    found = mail_of(body(event), WEB)
    assert found is not None
    event_id, buyer, mail = found
    assert event_id == event.event_id  # the mail's once-key
    assert buyer == "b-1"
    assert (mail.kind, mail.product_name, mail.more_lines, mail.total_amount) == (
        PLACED,
        "A",
        1,
        150,
    )
    assert mail.link == f"{WEB}/orders/o-1"
    assert mail_of(body(placed(from_draw=True)), WEB) is None  # the draw result mail tells

    paid = OrderPaid(order_id="o-1", buyer_id="b-1", payment_id="pay", total_amount=150)
    shipped = OrderShipped(order_id="o-1", buyer_id="b-1")
    delivered = OrderDelivered(order_id="o-1", buyer_id="b-1")
    kinds = [mail_of(body(e), "")[2].kind for e in (paid, shipped, delivered)]  # type: ignore[index]
    assert kinds == ["paid", "shipped", "delivered"]
    assert mail_of(body(shipped), "")[2].link == "/orders/o-1"  # type: ignore[index]

    admitted = QueueAdmitted(
        ticket_id="t", product_id="p1", product_name="A", buyer_id="b-2", admitted_until=UNTIL
    )
    found = mail_of(body(admitted), WEB)
    assert found is not None
    assert found[1:] == ("b-2", OrderMail(ADMITTED, f"{WEB}/products/p1", "", "A", 0, None, UNTIL))


def test_an_old_event_without_the_added_fields_still_has_its_mail() -> None:
    old = body(OrderPaid(order_id="o-1", buyer_id="b-1", payment_id="pay"))
    del old["total_amount"], old["product_name"]
    found = mail_of(old, "")
    assert found is not None
    _, en = render(found[2], "en")
    assert "Total: -" in en


@pytest.mark.parametrize(
    ("previous", "refund_required", "kind"),
    [
        ("PENDING_PAYMENT", False, CANCELLED),  # nothing was paid
        ("PREPARING", True, REFUNDED),  # the buyer's cancel or the admin's refund
        ("PREPARING", False, REFUNDED),  # refunded at the PG first
    ],
)
def test_a_cancel_is_refunded_only_when_money_goes_back(
    previous: str, refund_required: bool, kind: str
) -> None:
    event = OrderCancelled(
        order_id="o-1", buyer_id="b-1", previous_status=previous, refund_required=refund_required
    )
    found = mail_of(body(event), "")
    assert found is not None
    assert found[2].kind == kind


def test_a_deadline_past_sends_nothing_and_status_mail_waits_a_day() -> None:
    now = UNTIL.timestamp()
    assert deadline_seconds(sample(PLACED), now + 1) is None
    assert deadline_seconds(sample(ADMITTED), now - 600) == 600
    assert deadline_seconds(sample(ADMITTED), now - 5) == 60  # at least a minute
    assert deadline_seconds(sample("shipped"), now + 10**6) == DEADLINE_SECONDS
    far = OrderMail(PLACED, "/", until=UNTIL + timedelta(days=3))
    assert deadline_seconds(far, now) == DEADLINE_SECONDS


class FakeMailer(Mailer):
    def __init__(self, ok: bool = True) -> None:
        self.sent: list[tuple[str, str, str]] = []
        self.ok = ok

    async def send(self, to: str, subject: str, body: str) -> bool:
        self.sent.append((to, subject, body))
        return self.ok


@pytest.mark.parametrize("ok", [True, False])
async def test_the_worker_mails_the_queued_job(ok: bool) -> None:
    mailer = FakeMailer(ok)
    job = {"kind": ORDER_MAIL, "to": "b@example.com", "subject": "S", "body": "B\n"}
    assert await send_order_mail(mailer, job) is ok
    assert mailer.sent == [("b@example.com", "S", "B\n")]
    assert await send_order_mail(mailer, {"kind": ORDER_MAIL, "to": "x@example.com"}) is True
    assert len(mailer.sent) == 1
