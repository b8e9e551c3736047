"""The text of the buyer's order mail (pure): what users.order_mail queues for an order placed,
paid, shipped, delivered, cancelled or cancelled and refunded, and for an admission from a
waiting room. One language per mail, the account's (``users.lang``: Korean or English), subject
and body; every kind exists in both (tests/unit/users/test_order_mail_text.py).

Times are shown in Korea's time (KST, UTC+9: the store sells there), the English text with UTC
beside it; amounts are whole won.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from snapshoe.users.domain import Lang

KST = timezone(timedelta(hours=9), "KST")

PLACED = "placed"
PAID = "paid"
SHIPPED = "shipped"
DELIVERED = "delivered"
CANCELLED = "cancelled"
REFUNDED = "refunded"  # cancelled, and the payment goes back
ADMITTED = "admitted"
KINDS = (PLACED, PAID, SHIPPED, DELIVERED, CANCELLED, REFUNDED, ADMITTED)


@dataclass(frozen=True, slots=True)
class OrderMail:
    """What a mail tells, from its event. ``link``: the store's page of the order (or of the
    product, for an admission), a path or a full URL."""

    kind: str
    link: str
    order_id: str = ""
    product_name: str = ""
    more_lines: int = 0  # lines of other products beyond ``product_name``
    total_amount: int | None = None
    until: datetime | None = None  # placed: pay by; admitted: order by


def one_line(text: str) -> str:
    """Whitespace (newlines included) folded to single spaces: safe in a subject header."""
    return " ".join(text.split())


def _when(at: datetime | None, lang: Lang) -> str:
    if at is None:
        return "-"
    aware = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    kst = aware.astimezone(KST)
    if lang == "ko":
        return f"{kst:%Y-%m-%d %H:%M} (KST)"
    return f"{kst:%Y-%m-%d %H:%M} KST ({aware.astimezone(UTC):%H:%M} UTC)"


def _amount(amount: int | None, lang: Lang) -> str:
    if amount is None:
        return "-"
    return f"{amount:,}원" if lang == "ko" else f"KRW {amount:,}"


def _product(m: OrderMail, lang: Lang) -> str:
    name = one_line(m.product_name)
    if not name:
        return "-"
    if m.more_lines <= 0:
        return name
    return f"{name} 외 {m.more_lines}건" if lang == "ko" else f"{name} and {m.more_lines} more"


# Korean


def _ko(m: OrderMail) -> tuple[str, list[str]]:
    order = f"- 주문 번호: {m.order_id}"
    product = f"- 상품: {_product(m, 'ko')}"
    total = f"- 결제 금액: {_amount(m.total_amount, 'ko')}"
    texts: dict[str, tuple[str, list[str]]] = {
        PLACED: (
            "주문이 접수되었습니다",
            [
                "주문이 접수되었습니다. 결제 기한 안에 결제해 주세요.",
                "",
                order,
                product,
                total,
                f"- 결제 기한: {_when(m.until, 'ko')}",
                "- 기한이 지나면 주문은 자동으로 취소되고 상품은 다시 판매됩니다.",
            ],
        ),
        PAID: (
            "결제가 완료되었습니다",
            ["결제가 완료되었습니다. 상품을 준비하고 있습니다.", "", order, product, total],
        ),
        SHIPPED: ("상품이 발송되었습니다", ["주문하신 상품이 발송되었습니다.", "", order]),
        DELIVERED: (
            "배송이 완료되었습니다",
            ["주문하신 상품의 배송이 완료되었습니다. 이용해 주셔서 감사합니다.", "", order],
        ),
        CANCELLED: (
            "주문이 취소되었습니다",
            ["주문이 취소되었습니다.", "", order, "- 결제된 금액은 없습니다."],
        ),
        REFUNDED: (
            "주문이 취소되고 환불되었습니다",
            [
                "주문이 취소되었습니다. 결제하신 금액은 전액 환불됩니다.",
                "",
                order,
                "- 카드사에 따라 환불이 반영되기까지 며칠이 걸릴 수 있습니다.",
            ],
        ),
        ADMITTED: (
            f"입장 차례가 되었습니다: {one_line(m.product_name)}",
            [
                f"대기열에서 입장하셨습니다. 지금 {one_line(m.product_name)}을(를) 주문하실 수 "
                "있습니다.",
                "",
                f"- 주문 가능 시간: {_when(m.until, 'ko')}까지",
                "- 이 시간이 지나면 입장 자격은 다음 순번의 구매자에게 넘어갑니다.",
            ],
        ),
    }
    subject, lines = texts[m.kind]
    link = "주문하러 가기" if m.kind == ADMITTED else "주문 보기"
    return subject, [*lines, "", f"{link}: {m.link}"]


# English


def _en(m: OrderMail) -> tuple[str, list[str]]:
    order = f"- Order: {m.order_id}"
    product = f"- Item: {_product(m, 'en')}"
    total = f"- Total: {_amount(m.total_amount, 'en')}"
    texts: dict[str, tuple[str, list[str]]] = {
        PLACED: (
            "Order confirmed",
            [
                "Your order is confirmed. Please pay before the deadline.",
                "",
                order,
                product,
                total,
                f"- Pay by: {_when(m.until, 'en')}",
                "- Unpaid by then, the order is cancelled and the pair goes back on sale.",
            ],
        ),
        PAID: (
            "Payment received",
            ["Your payment is received. We are preparing your order.", "", order, product, total],
        ),
        SHIPPED: ("Your order has shipped", ["Your order is on its way.", "", order]),
        DELIVERED: (
            "Your order was delivered",
            ["Your order was delivered. Thank you for shopping with us.", "", order],
        ),
        CANCELLED: (
            "Your order was cancelled",
            ["Your order was cancelled.", "", order, "- Nothing was charged."],
        ),
        REFUNDED: (
            "Your order was cancelled and refunded",
            [
                "Your order was cancelled. Your payment is refunded in full.",
                "",
                order,
                "- Your card issuer may take a few days to show the refund.",
            ],
        ),
        ADMITTED: (
            f"It's your turn: {one_line(m.product_name)}",
            [
                f"You are through the waiting room: you may order {one_line(m.product_name)} now.",
                "",
                f"- Order by: {_when(m.until, 'en')}",
                "- After that, your turn goes to the next buyer in the queue.",
            ],
        ),
    }
    subject, lines = texts[m.kind]
    link = "Order now" if m.kind == ADMITTED else "See your order"
    return subject, [*lines, "", f"{link}: {m.link}"]


_TEXTS: dict[str, Callable[[OrderMail], tuple[str, list[str]]]] = {"ko": _ko, "en": _en}


def render(mail: OrderMail, lang: Lang, name: str = "") -> tuple[str, str]:
    """The subject and plain-text body of ``mail`` in ``lang`` only."""
    who = one_line(name)
    subject, lines = _TEXTS[lang](mail)
    if lang == "ko":
        hello = f"{who}님, 안녕하세요." if who else "안녕하세요."
    else:
        hello = f"Hello {who}," if who else "Hello,"
    return f"[SnapShoe] {subject}", "\n".join([hello, "", *lines, "", "SnapShoe"]) + "\n"
