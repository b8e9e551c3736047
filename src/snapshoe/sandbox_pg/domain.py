"""The sandbox PG's rules: payments, card outcomes, confirm and cancel, billing keys and their
charges, and the Toss-shaped JSON. Pure: no I/O, the caller passes the clock and the dice.

Error codes and messages follow the Toss Payments API (docs.tosspayments.com, "에러 코드").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import string
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

KST = timezone(timedelta(hours=9))
MID = "snapshoe_sandbox"
API_VERSION = "2022-11-16"

ORDER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{6,64}$")
# Toss: customerKey is 2 to 300 of letters, digits and - _ = . @
CUSTOMER_KEY_PATTERN = r"^[A-Za-z0-9\-_=.@]{2,300}$"
MAX_AMOUNT = 1_000_000_000
MAX_REASON = 200

_ALNUM = string.ascii_letters + string.digits


class Status(StrEnum):
    READY = "READY"
    IN_PROGRESS = "IN_PROGRESS"
    DONE = "DONE"
    CANCELED = "CANCELED"
    PARTIAL_CANCELED = "PARTIAL_CANCELED"
    ABORTED = "ABORTED"
    EXPIRED = "EXPIRED"


class Outcome(StrEnum):
    APPROVE = "approve"
    DECLINE = "decline"
    # Approved and recorded, but the caller never sees the response.
    APPROVE_LOST = "approve_lost"


class TossError(Exception):
    """A Toss-style error response: HTTP status and body ``{code, message}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def invalid_request(message: str) -> TossError:
    return TossError(400, "INVALID_REQUEST", message)


UNAUTHORIZED = TossError(
    401, "UNAUTHORIZED_KEY", "인증되지 않은 시크릿 키 혹은 클라이언트 키 입니다."
)
INTERNAL = TossError(
    500,
    "FAILED_INTERNAL_SYSTEM_PROCESSING",
    "내부 시스템 처리 작업이 실패했습니다. 잠시 후 다시 시도해주세요.",
)
IN_FLIGHT = TossError(409, "IDEMPOTENT_REQUEST_PROCESSING", "이전 멱등 요청이 처리 중입니다.")


def session_not_found() -> TossError:
    return TossError(
        404,
        "NOT_FOUND_PAYMENT_SESSION",
        "결제 시간이 만료되어 결제 진행 데이터가 존재하지 않습니다.",
    )


def duplicated_order_id() -> TossError:
    return TossError(
        400, "DUPLICATED_ORDER_ID", "이미 승인 및 취소가 진행된 중복된 주문번호 입니다."
    )


def not_found_payment() -> TossError:
    return TossError(404, "NOT_FOUND_PAYMENT", "존재하지 않는 결제 정보 입니다.")


def reject_card() -> TossError:
    return TossError(403, "REJECT_CARD_PAYMENT", "한도초과 혹은 잔액부족으로 결제에 실패했습니다.")


# --- inputs -----------------------------------------------------------------------------------


def normalize_card_number(raw: str) -> str | None:
    """Digits only (spaces and dashes allowed as separators), 12 to 19 digits, else None."""
    digits = raw.replace(" ", "").replace("-", "")
    if not digits.isascii() or not digits.isdigit() or not 12 <= len(digits) <= 19:
        return None
    return digits


def valid_order_id(order_id: str) -> bool:
    return bool(ORDER_ID_RE.fullmatch(order_id))


def valid_amount(amount: object) -> bool:
    # bool is an int in Python; a JSON true is not an amount.
    return isinstance(amount, int) and not isinstance(amount, bool) and 0 < amount <= MAX_AMOUNT


def card_outcome(
    card_number: str,
    *,
    decline_roll: float,
    lost_roll: float,
    decline_rate: float,
    lost_rate: float,
) -> Outcome:
    """What the issuer says. Ending 0002 always declines, 0009 is always approved with the
    response lost; any other card is approved unless the decline/lost dice say otherwise."""
    if card_number.endswith("0002"):
        return Outcome.DECLINE
    if card_number.endswith("0009"):
        return Outcome.APPROVE_LOST
    if decline_roll < decline_rate:
        return Outcome.DECLINE
    if lost_roll < lost_rate:
        return Outcome.APPROVE_LOST
    return Outcome.APPROVE


# --- the payment ------------------------------------------------------------------------------


def new_payment_key() -> str:
    # Toss payment keys are ~50 alphanumerics; unguessable matters (the buyer's browser has it).
    return "".join(secrets.choice(_ALNUM) for _ in range(50))


def new_transaction_key() -> str:
    return secrets.token_hex(16).upper()


def kst(ts: float | None) -> str | None:
    """ISO 8601 with the +09:00 offset, as Toss renders times."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).astimezone(KST).isoformat(timespec="seconds")


@dataclass
class Cancel:
    amount: int
    reason: str
    canceled_at: float
    transaction_key: str
    refundable_after: int


@dataclass
class Payment:
    payment_key: str
    order_id: str
    order_name: str
    amount: int
    card_number: str
    requested_at: float
    status: Status = Status.READY
    balance: int = 0
    approved_at: float | None = None
    approve_no: str | None = None
    last_transaction_key: str | None = None
    failure: dict[str, str] | None = None
    cancels: list[Cancel] = field(default_factory=list)
    # Toss ``type``: NORMAL (the buyer's payment window, then confirm) or BILLING (charged
    # through a billing key). Payments stored before billing existed have no such key.
    type: str = "NORMAL"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Payment:
        data = dict(data)
        data["status"] = Status(data["status"])
        data["cancels"] = [Cancel(**c) for c in data.get("cancels") or []]
        return cls(**data)


def authorize(order_id: str, amount: int, card_number: str, order_name: str, now: float) -> Payment:
    return Payment(
        payment_key=new_payment_key(),
        order_id=order_id,
        order_name=order_name,
        amount=amount,
        card_number=card_number,
        requested_at=now,
        balance=amount,
    )


def check_confirm(
    payment: Payment, order_id: str, amount: int, now: float, session_ttl: float
) -> None:
    """Raise the Toss error a confirm of this payment gets, or return if it may proceed.

    A payment already confirmed is never confirmed twice; a declined one keeps its decline
    (the outcome of a payment key is final)."""
    if payment.order_id != order_id:
        raise invalid_request("주문번호(orderId)가 결제 요청 정보와 일치하지 않습니다.")
    if payment.status in (Status.DONE, Status.CANCELED, Status.PARTIAL_CANCELED):
        raise TossError(400, "ALREADY_PROCESSED_PAYMENT", "이미 처리된 결제 입니다.")
    if payment.status is Status.ABORTED and payment.failure:
        raise TossError(403, payment.failure["code"], payment.failure["message"])
    if payment.status is Status.EXPIRED or now - payment.requested_at > session_ttl:
        raise session_not_found()
    if payment.amount != amount:
        raise invalid_request("결제 금액(amount)이 결제 요청 금액과 일치하지 않습니다.")


def approve(payment: Payment, now: float) -> None:
    payment.status = Status.DONE
    payment.approved_at = now
    payment.balance = payment.amount
    payment.approve_no = f"{secrets.randbelow(10**8):08d}"
    payment.last_transaction_key = new_transaction_key()
    payment.failure = None


def decline(payment: Payment, error: TossError) -> None:
    payment.status = Status.ABORTED
    payment.failure = error.body()
    payment.last_transaction_key = new_transaction_key()


def expire(payment: Payment) -> None:
    payment.status = Status.EXPIRED


def cancel(payment: Payment, reason: str, amount: int | None, now: float) -> Cancel:
    """Refund ``amount`` (default: all that is left). Raises the Toss error if it cannot."""
    if payment.status is Status.CANCELED:
        raise TossError(400, "ALREADY_CANCELED_PAYMENT", "이미 취소된 결제 입니다.")
    if payment.status not in (Status.DONE, Status.PARTIAL_CANCELED):
        raise TossError(403, "NOT_CANCELABLE_PAYMENT", "취소 할 수 없는 결제 입니다.")
    amount = payment.balance if amount is None else amount
    if amount > payment.balance:
        raise TossError(403, "NOT_CANCELABLE_AMOUNT", "취소 할 수 없는 금액 입니다.")
    payment.balance -= amount
    payment.status = Status.CANCELED if payment.balance == 0 else Status.PARTIAL_CANCELED
    entry = Cancel(
        amount=amount,
        reason=reason,
        canceled_at=now,
        transaction_key=new_transaction_key(),
        refundable_after=payment.balance,
    )
    payment.cancels.append(entry)
    payment.last_transaction_key = entry.transaction_key
    return entry


def mask_card(number: str) -> str:
    return number[:8] + "*" * (len(number) - 12) + number[-4:]


def _vat(amount: int) -> int:
    return round(amount / 11)


def _toss_card(p: Payment) -> dict[str, Any]:
    """The ``card`` object of an attempted payment."""
    return {
        "issuerCode": "71",
        "acquirerCode": "71",
        "number": mask_card(p.card_number),
        "installmentPlanMonths": 0,
        "isInterestFree": False,
        "interestPayer": None,
        "approveNo": p.approve_no or "00000000",
        "useCardPoint": False,
        "cardType": "신용",
        "ownerType": "개인",
        "acquireStatus": "CANCELED" if p.status is Status.CANCELED else "READY",
        "amount": p.amount,
    }


def _toss_cancels(p: Payment) -> list[dict[str, Any]]:
    return [
        {
            "transactionKey": c.transaction_key,
            "cancelReason": c.reason,
            "taxExemptionAmount": 0,
            "canceledAt": kst(c.canceled_at),
            "easyPayDiscountAmount": 0,
            "receiptKey": None,
            "cancelAmount": c.amount,
            "taxFreeAmount": 0,
            "refundableAmount": c.refundable_after,
            "cancelStatus": "DONE",
            "cancelRequestId": None,
        }
        for c in p.cancels
    ]


def to_toss(p: Payment) -> dict[str, Any]:
    """The Toss Payments ``Payment`` object (version 2022-11-16), card payments only."""
    attempted = p.status is not Status.READY and p.status is not Status.EXPIRED
    card = _toss_card(p) if attempted else None
    cancels = _toss_cancels(p)
    return {
        "mId": MID,
        "lastTransactionKey": p.last_transaction_key,
        "paymentKey": p.payment_key,
        "orderId": p.order_id,
        "orderName": p.order_name,
        "taxExemptionAmount": 0,
        "status": p.status.value,
        "requestedAt": kst(p.requested_at),
        "approvedAt": kst(p.approved_at),
        "useEscrow": False,
        "cultureExpense": False,
        "card": card,
        "virtualAccount": None,
        "transfer": None,
        "mobilePhone": None,
        "giftCertificate": None,
        "cashReceipt": None,
        "cashReceipts": None,
        "discount": None,
        "cancels": cancels or None,
        "secret": None,
        "type": p.type,
        "easyPay": None,
        "country": "KR",
        "failure": p.failure,
        "isPartialCancelable": True,
        "receipt": None,
        "checkout": None,
        "currency": "KRW",
        "totalAmount": p.amount,
        "balanceAmount": p.balance,
        "suppliedAmount": p.balance - _vat(p.balance),
        "vat": _vat(p.balance),
        "taxFreeAmount": 0,
        "method": "카드" if attempted else None,
        "version": API_VERSION,
    }


def webhook_event(p: Payment, now: float) -> dict[str, Any]:
    created = datetime.fromtimestamp(now, UTC).astimezone(KST).replace(tzinfo=None)
    # Toss sends createdAt without an offset (KST local time, microseconds).
    return {
        "eventType": "PAYMENT_STATUS_CHANGED",
        "createdAt": created.isoformat(),
        "data": to_toss(p),
    }


# --- billing keys (Toss 자동결제) ---------------------------------------------------------------

CARD_COMPANY = "롯데"  # issuer code 71, as every sandbox card
_FINGERPRINT_LABEL = b"snapshoe-sandbox-card-fingerprint\x00"


def invalid_card_number() -> TossError:
    return TossError(400, "INVALID_CARD_NUMBER", "카드번호를 다시 확인해야 합니다.")


def invalid_card_expiration() -> TossError:
    return TossError(400, "INVALID_CARD_EXPIRATION", "카드 유효기간 정보를 다시 확인해야 합니다.")


def invalid_billing_key() -> TossError:
    """A charge through a billing key the PG never issued (Toss: 카드 자동결제 승인)."""
    return TossError(
        400,
        "INVALID_BILL_KEY_REQUEST",
        "빌링키 인증이 완료되지 않았거나 유효하지 않은 빌링 거래입니다.",
    )


def not_matches_customer_key() -> TossError:
    return TossError(
        400,
        "NOT_MATCHES_CUSTOMER_KEY",
        "빌링 인증 고객키와 결제 요청 고객키가 일치하지 않습니다.",
    )


def not_found_billing() -> TossError:
    """The look-up (a sandbox addition) of a billing key the PG never issued."""
    return TossError(404, "NOT_FOUND_BILLING", "존재하지 않는 빌링 결제 인증 정보 입니다.")


@dataclass
class BillingKey:
    """A card registered for automatic payments, tied to one ``customerKey``. The full number
    stays in the sandbox (a real PG keeps it the same way); answers carry it masked."""

    billing_key: str
    customer_key: str
    card_number: str
    expiration_year: str
    expiration_month: str
    authenticated_at: float
    fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BillingKey:
        return cls(**data)


def new_billing_key() -> str:
    # Toss billing keys are URL-safe base64 of 32 bytes (44 characters, one '=').
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def card_fingerprint(secret: str, card_number: str) -> str:
    """The same card gives the same fingerprint, whoever registers it. An HMAC under a key of
    the sandbox's own (derived from its secret key), not a plain hash: card numbers have so
    little entropy that a bare SHA-256 of one could be reversed by trying them all."""
    key = hashlib.sha256(_FINGERPRINT_LABEL + secret.encode()).digest()
    return hmac.new(key, card_number.encode(), hashlib.sha256).hexdigest()


def mask_billing_card(number: str) -> str:
    """Toss's mask on a billing key's card: the first 8 digits and 3 of the last 4
    (``43301234****123*``)."""
    return number[:8] + "*" * (len(number) - 12) + number[-4:-1] + "*"


def card_expired(year: str, month: str, now: float) -> bool:
    """A card is valid through the last day of its expiration month (KST). ``year`` is the two
    digits Toss takes ("30" is 2030), ``month`` 01..12 (checked by the body's schema)."""
    today = datetime.fromtimestamp(now, UTC).astimezone(KST)
    return (2000 + int(year), int(month)) < (today.year, today.month)


def issue_billing_key(
    secret: str, customer_key: str, card_number: str, year: str, month: str, now: float
) -> BillingKey:
    """Register ``card_number`` (already normalised) for ``customer_key``; raises the Toss error
    of an expired card. Any sandbox card registers: its ending decides at each charge."""
    if card_expired(year, month, now):
        raise invalid_card_expiration()
    return BillingKey(
        billing_key=new_billing_key(),
        customer_key=customer_key,
        card_number=card_number,
        expiration_year=year,
        expiration_month=month,
        authenticated_at=now,
        fingerprint=card_fingerprint(secret, card_number),
    )


def check_billing(billing: BillingKey | None, customer_key: str) -> BillingKey:
    """The billing key a charge may use, or the Toss error it gets."""
    if billing is None:
        raise invalid_billing_key()
    if not hmac.compare_digest(billing.customer_key.encode(), customer_key.encode()):
        raise not_matches_customer_key()
    return billing


def billing_payment(
    billing: BillingKey, order_id: str, amount: int, order_name: str, now: float
) -> Payment:
    """A new payment charged through ``billing`` (a new paymentKey per charge)."""
    return Payment(
        payment_key=new_payment_key(),
        order_id=order_id,
        order_name=order_name,
        amount=amount,
        card_number=billing.card_number,
        requested_at=now,
        balance=amount,
        type="BILLING",
    )


def to_toss_billing(b: BillingKey) -> dict[str, Any]:
    """The Toss billing-key issue answer (``POST /v1/billing/authorizations/card``), plus the
    sandbox's ``card.fingerprint``."""
    masked = mask_billing_card(b.card_number)
    return {
        "mId": MID,
        "customerKey": b.customer_key,
        "authenticatedAt": kst(b.authenticated_at),
        "method": "카드",
        "billingKey": b.billing_key,
        "cardCompany": CARD_COMPANY,
        "cardNumber": masked,
        "card": {
            "issuerCode": "71",
            "acquirerCode": "71",
            "number": masked,
            "cardType": "신용",
            "ownerType": "개인",
            "fingerprint": b.fingerprint,
        },
    }
