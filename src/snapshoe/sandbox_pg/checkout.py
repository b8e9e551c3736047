"""The payment window (결제창): the page a buyer pays on, as Toss's redirect flow works.

A store sends the buyer to ``GET /v1/sandbox/checkout?orderId&amount&orderName&successUrl&
failUrl``; the page's form posts back here with the card number; the sandbox authorizes exactly
as ``POST /v1/sandbox/authorizations`` does (``handlers.authorize``) and sends the buyer to
``successUrl`` with ``paymentKey``, ``orderId``, ``amount``, or to ``failUrl`` with ``code``,
``message``, ``orderId``. The store then confirms with SnapShoe as after the API step.

What the page was opened with travels in hidden fields signed with the PG secret key, so the
buyer (or anyone forging a form) cannot change the amount or where the answer goes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit, urlunsplit

import orjson

from snapshoe.kernel.errors import Problem
from snapshoe.sandbox_pg import domain, handlers
from snapshoe.sandbox_pg.deps import Deps
from snapshoe.sandbox_pg.repository import LockTimeout

MAX_URL = 2048
MAX_ORDER_NAME = 100
MAX_FORM_FIELDS = 20
FIELDS = ("orderId", "amount", "orderName", "successUrl", "failUrl")
_SIGNATURE_LABEL = b"snapshoe-sandbox-checkout\x00"
# Printable ASCII without space: what a URL may hold once percent-encoded. Anything else (a
# control character, a space, a backslash some browsers read as a slash) is refused, so the
# Location header and the CSP source are exactly the URL that was checked.
_URL_CHARS = re.compile(r"^[!-\[\]-~]+$")
# A host a CSP source expression can name (no IPv6 literal, no underscore).
_HOST = re.compile(r"^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$")
_AMOUNT = re.compile(r"^[1-9][0-9]{0,9}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# failUrl codes, as Toss sends them from its window (docs.tosspayments.com, "에러 코드").
CANCELED = ("PAY_PROCESS_CANCELED", "사용자에 의해 결제가 취소되었습니다.")
ABORTED = ("PAY_PROCESS_ABORTED", "결제 진행 중 승인에 실패하여 결제가 중단되었습니다.")
_BAD_CARD = domain.invalid_card_number()
# What handlers.authorize refuses (its problem codes), as the window reports it to failUrl.
_REFUSALS = {
    "invalid_card_number": (_BAD_CARD.code, _BAD_CARD.message),
    "order_already_paid": ("ALREADY_PROCESSED_PAYMENT", "이미 처리된 결제 입니다."),
}


class WindowError(Exception):
    """A request the window will not serve (a 400 page): bad parameters or a tampered form."""

    def __init__(self, ko: str, en: str) -> None:
        super().__init__(en)
        self.ko = ko
        self.en = en


@dataclass(frozen=True, slots=True)
class Window:
    """What the store opened the window with."""

    order_id: str
    amount: int
    order_name: str
    success_url: str
    fail_url: str

    def form_fields(self) -> dict[str, str]:
        return {
            "orderId": self.order_id,
            "amount": str(self.amount),
            "orderName": self.order_name,
            "successUrl": self.success_url,
            "failUrl": self.fail_url,
        }

    def origins(self) -> list[str]:
        """Where the answer may send the buyer (the page's CSP ``form-action`` names them:
        browsers apply it to the redirect that answers the form too)."""
        found = [origin(self.success_url), origin(self.fail_url)]
        return list(dict.fromkeys(found))


def single_values(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Query or form pairs as a dict; a field of the window given twice is refused."""
    values: dict[str, str] = {}
    for key, value in items:
        if key in values and key in (*FIELDS, "signature", "cardNumber", "action"):
            raise WindowError(f"{key} 값이 두 번 있습니다.", f"{key} is given more than once.")
        values.setdefault(key, value)
    return values


def decode_form(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (what the window's form sends)."""
    try:
        pairs = parse_qsl(
            body.decode(),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise WindowError("결제 요청을 읽을 수 없습니다.", "The form could not be read.") from None
    return single_values(pairs)


def read_window(values: dict[str, str]) -> Window:
    """The window's parameters, checked as the API checks them, or :class:`WindowError`."""
    order_id = values.get("orderId", "")
    if not domain.valid_order_id(order_id):
        raise WindowError(
            "주문번호(orderId)는 6자 이상 64자 이하의 영문, 숫자, -, _ 입니다.",
            "orderId must be 6 to 64 of A-Z a-z 0-9 - _.",
        )
    raw_amount = values.get("amount", "")
    if not _AMOUNT.fullmatch(raw_amount) or not domain.valid_amount(int(raw_amount)):
        raise WindowError(
            "결제 금액(amount)은 1원 이상 10억원 이하의 정수입니다.",
            "amount must be a whole number of KRW from 1 to 1,000,000,000.",
        )
    order_name = values.get("orderName", "")
    # No control characters: a browser would post a newline back as CR LF, another value.
    if not 1 <= len(order_name) <= MAX_ORDER_NAME or _CONTROL.search(order_name):
        raise WindowError(
            "주문명(orderName)은 제어 문자 없이 1자 이상 100자 이하입니다.",
            "orderName must be 1 to 100 characters, none of them a control character.",
        )
    return Window(
        order_id,
        int(raw_amount),
        order_name,
        check_url(values.get("successUrl", ""), "successUrl"),
        check_url(values.get("failUrl", ""), "failUrl"),
    )


def _split(url: str) -> SplitResult | None:
    if not url or len(url) > MAX_URL or not _URL_CHARS.fullmatch(url):
        return None
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a port that is not a number (or out of range)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not _HOST.fullmatch(parts.hostname or ""):
        return None
    return parts


def check_url(url: str, name: str) -> str:
    """An absolute http(s) URL, any host (a sandbox), or :class:`WindowError` (``javascript:``,
    ``data:``, a relative URL, a control character, an IPv6 literal...)."""
    if _split(url) is None:
        raise WindowError(
            f"{name}은(는) http 또는 https로 시작하는 절대 URL이어야 합니다.",
            f"{name} must be an absolute http or https URL (percent-encoded, host name or IPv4).",
        )
    return url


def origin(url: str) -> str:
    parts = _split(url)
    if parts is None:  # read_window lets only checked URLs in
        raise ValueError(f"not a window URL: {url!r}")
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def sign(secret: str, window: Window) -> str:
    """HMAC-SHA256 with the PG secret key over every field the page was opened with (orderId,
    amount, orderName, successUrl, failUrl), JSON-encoded so no two field lists sign alike."""
    fields = [window.order_id, window.amount, window.order_name]
    message = _SIGNATURE_LABEL + orjson.dumps([*fields, window.success_url, window.fail_url])
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def read_form(secret: str, values: dict[str, str]) -> Window:
    """The window a posted form carries, if its signature is the sandbox's own."""
    window = read_window(values)
    if not hmac.compare_digest(values.get("signature", "").encode(), sign(secret, window).encode()):
        raise WindowError(
            "결제 정보가 변경되었습니다. 가맹점에서 결제를 다시 시작해 주세요.",
            "The payment details were altered; start the payment again from the store.",
        )
    return window


def with_query(url: str, params: list[tuple[str, str]]) -> str:
    """``url`` with ``params`` appended to its own query (kept as it was), each percent-encoded."""
    parts = urlsplit(url)
    extra = urlencode(params, quote_via=quote)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


def fail_url(window: Window, code: str, message: str) -> str:
    return with_query(
        window.fail_url, [("code", code), ("message", message), ("orderId", window.order_id)]
    )


def cancel(window: Window) -> str:
    """The buyer closed the window: failUrl, as Toss sends it."""
    return fail_url(window, *CANCELED)


async def pay(deps: Deps, window: Window, card_number: str) -> str:
    """Authorize as the API does; the URL the buyer goes to next."""
    try:
        payment = await handlers.authorize(
            deps, window.order_id, window.amount, card_number, window.order_name
        )
    except Problem as exc:
        return fail_url(window, *_REFUSALS.get(exc.code, ABORTED))
    except LockTimeout:  # the order is busy at the PG; nothing was done
        return fail_url(window, *ABORTED)
    return with_query(
        window.success_url,
        [
            ("paymentKey", payment.payment_key),
            ("orderId", payment.order_id),
            ("amount", str(payment.amount)),
        ],
    )
