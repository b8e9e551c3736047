"""The payment-gateway adapter: a typed async client of the Toss Payments API (v1).

The same code talks to the sandbox PG (dev, tests, benchmarks) and to the real Toss API:
only ``base_url`` and ``secret_key`` differ (``SNAPSHOE_PG_BASE_URL``,
``SNAPSHOE_PG_SECRET_KEY``; see docs/payments-pg.md).

What each outcome means to the caller:

- a returned ``PgPayment``: the PG's answer, final for this call.
- ``PgDeclined``: a definitive business rejection (card declined, bad request, not
  cancelable ...). Nothing was charged or refunded by this call.
- ``PgNotFound``: no such payment (for confirm: the payment session does not exist or
  expired; nothing was charged).
- ``PgUnknownResult``: no definitive answer (timeout, connection cut after the request was
  sent, 5xx, a duplicate still in flight). The operation MAY have happened: never treat it as
  failed; ask the PG later (``get_by_order_id``) or retry with the same Idempotency-Key.
- ``PgAuthError``: the PG refused our credentials: a configuration problem; nothing happened.

Billing keys (Toss 자동결제, a draw's charges): ``issue_billing_key`` registers a card,
``charge_billing_key`` charges one (a ``PgPayment`` like confirm's, with the same outcomes),
``get_billing_key`` reads one back (a sandbox addition: Toss has no such look-up); see
docs/payments.md, "Billing keys (draws)".

Retries are bounded and only where they cannot charge twice: GETs, requests that never
reached the PG (connect errors), and POSTs only with the same ``Idempotency-Key``
(``post_retries``, default 0 so that an unknown result reaches the caller within one timeout).
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel
from yarl import URL

from snapshoe.kernel.clients import LOST_AFTER_SENDING, NOT_SENT, pooled_session
from snapshoe.payments.payment_metrics import PG_REQUESTS, PG_SECONDS
from snapshoe.payments.settings import PaymentsSettings

TOSS_BASE_URL = "https://api.tosspayments.com"

# Toss codes (docs.tosspayments.com "에러 코드") that say "try again later": the operation's
# outcome is not known to be a rejection.
RETRYABLE_CODES = frozenset(
    {
        "PROVIDER_ERROR",
        "FAILED_INTERNAL_SYSTEM_PROCESSING",
        "FAILED_PAYMENT_INTERNAL_SYSTEM_PROCESSING",
        "UNKNOWN_PAYMENT_ERROR",
        "IDEMPOTENT_REQUEST_PROCESSING",
        "FORBIDDEN_CONSECUTIVE_REQUEST",
        "CARD_PROCESSING_ERROR",
        "FAILED_CARD_COMPANY_RESPONSE",
        "COMMON_ERROR",
    }
)
AUTH_CODES = frozenset({"UNAUTHORIZED_KEY", "INVALID_API_KEY", "INCORRECT_BASIC_AUTH_FORMAT"})
NOT_FOUND_CODES = frozenset(
    {"NOT_FOUND_PAYMENT", "NOT_FOUND_PAYMENT_SESSION", "NOT_FOUND", "NOT_FOUND_BILLING"}
)
# A billing charge of an order id that already has an approved payment.
DUPLICATE_ORDER_CODES = frozenset({"DUPLICATED_ORDER_ID", "ALREADY_PROCESSED_PAYMENT"})


# --- errors -----------------------------------------------------------------------------------


class PgError(Exception):
    """Base of every adapter error. ``status`` is the HTTP status when the PG answered."""

    def __init__(self, code: str, message: str = "", status: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.status = status


class PgDeclined(PgError):
    """A definitive business rejection: nothing was charged (or refunded) by this call."""


class PgNotFound(PgError):
    """No such payment (or payment session) at the PG."""


class PgUnknownResult(PgError):
    """The PG gave no definitive answer; the operation may have happened. Never mark the
    payment failed on this: reconcile by order id, or retry with the same Idempotency-Key."""


class PgAuthError(PgError):
    """The PG refused the secret key: fix the configuration. Nothing happened."""


def classify(status: int, code: str) -> type[PgError]:
    """Which error an HTTP error answer of the PG is (pure; unit-tested)."""
    if status == 401 or code in AUTH_CODES:
        return PgAuthError
    if status == 404 or code in NOT_FOUND_CODES:
        return PgNotFound
    if status >= 500 or status in (408, 409, 429) or code in RETRYABLE_CODES:
        return PgUnknownResult
    if 400 <= status < 500:
        return PgDeclined
    return PgUnknownResult  # 1xx/3xx: not an answer we understand


# --- the payment ------------------------------------------------------------------------------


PG_OUTCOMES: dict[type[PgError], str] = {
    PgDeclined: "declined",
    PgNotFound: "not_found",
    PgUnknownResult: "unknown",
    PgAuthError: "auth_error",
}


class PgStatus(StrEnum):
    READY = "READY"
    IN_PROGRESS = "IN_PROGRESS"
    WAITING_FOR_DEPOSIT = "WAITING_FOR_DEPOSIT"
    DONE = "DONE"
    CANCELED = "CANCELED"
    PARTIAL_CANCELED = "PARTIAL_CANCELED"
    ABORTED = "ABORTED"
    EXPIRED = "EXPIRED"


class _TossModel(BaseModel):
    # Toss adds fields over time; unknown ones are ignored, known ones are typed.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


class PgCard(_TossModel):
    number: str | None = None
    amount: int | None = None
    approve_no: str | None = None
    issuer_code: str | None = None
    acquirer_code: str | None = None
    card_type: str | None = None
    owner_type: str | None = None
    acquire_status: str | None = None
    installment_plan_months: int | None = None


class PgCancel(_TossModel):
    cancel_amount: int
    cancel_reason: str | None = None
    canceled_at: datetime | None = None
    transaction_key: str | None = None
    refundable_amount: int | None = None
    cancel_status: str | None = None


class PgFailure(_TossModel):
    code: str
    message: str | None = None


class PgPayment(_TossModel):
    """The Toss ``Payment`` object, reduced to what SnapShoe uses."""

    payment_key: str
    order_id: str
    status: PgStatus
    total_amount: int
    balance_amount: int
    order_name: str | None = None
    method: str | None = None
    currency: str = "KRW"
    requested_at: datetime | None = None
    approved_at: datetime | None = None
    last_transaction_key: str | None = None
    card: PgCard | None = None
    cancels: list[PgCancel] = Field(default_factory=list)
    failure: PgFailure | None = None

    @field_validator("cancels", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def is_approved(self) -> bool:
        """Money was taken (and maybe partly refunded since)."""
        return self.status in (PgStatus.DONE, PgStatus.PARTIAL_CANCELED, PgStatus.CANCELED)

    @property
    def is_final(self) -> bool:
        """No further change happens without a new request from us."""
        return self.status not in (
            PgStatus.READY,
            PgStatus.IN_PROGRESS,
            PgStatus.WAITING_FOR_DEPOSIT,
        )

    @property
    def refunded_amount(self) -> int:
        return sum(c.cancel_amount for c in self.cancels)


@dataclass(frozen=True, slots=True)
class PgBillingKey:
    """A billing key as the PG issued it. ``card_number`` is masked; ``fingerprint`` (the same
    for the same card, whoever registered it) is the sandbox's addition: None from Toss."""

    billing_key: str
    customer_key: str
    card_number: str
    fingerprint: str | None = None


def _billing_key(data: dict[str, Any], *, unknown_on_error: bool) -> PgBillingKey:
    """Parse a Toss billing-key answer (``billingKey``, ``customerKey``, ``card.number`` or
    ``cardNumber``, the sandbox's ``card.fingerprint``)."""
    card = data.get("card")
    card = card if isinstance(card, dict) else {}
    number = card.get("number") or data.get("cardNumber")
    fingerprint = card.get("fingerprint")
    key, customer = data.get("billingKey"), data.get("customerKey")
    if not (isinstance(key, str) and key and isinstance(customer, str) and customer):
        kind = PgUnknownResult if unknown_on_error else PgError
        raise kind("INVALID_RESPONSE", "not a Toss billing key object")
    return PgBillingKey(
        billing_key=key,
        customer_key=customer,
        card_number=number if isinstance(number, str) else "",
        fingerprint=fingerprint if isinstance(fingerprint, str) and fingerprint else None,
    )


class PgWebhookHint(_TossModel):
    """What a ``PAYMENT_STATUS_CHANGED`` webhook says. A hint only: re-read the payment."""

    event_type: str
    payment_key: str
    order_id: str
    status: str | None = None


def parse_webhook(body: bytes | str) -> PgWebhookHint:
    """Parse a Toss ``PAYMENT_STATUS_CHANGED`` webhook body; ``PgError`` if it is not one."""
    try:
        event = orjson.loads(body)
        data = event["data"]
        return PgWebhookHint(
            event_type=event["eventType"],
            payment_key=data["paymentKey"],
            order_id=data["orderId"],
            status=data.get("status"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValidationError) as exc:
        raise PgError("INVALID_WEBHOOK", f"not a payment webhook: {exc!r}") from None


# --- the client -------------------------------------------------------------------------------

Method = Literal["GET", "POST"]


class TossPaymentsClient:
    """An async client of the Toss Payments API v1 (or the sandbox PG, which has its shape).

    ``http``: a shared ``aiohttp.ClientSession`` (keep-alive pool); when given, its own
    timeouts are replaced per request by ``timeout`` and the caller closes it. Otherwise the
    client makes one on first use (inside the running loop) and ``aclose()`` closes it.
    ``timeout`` bounds each step (a pooled connection, connecting: at most 3 s; each read).
    """

    def __init__(
        self,
        base_url: str,
        secret_key: str,
        timeout: float = 5.0,
        http: aiohttp.ClientSession | None = None,
        *,
        retries: int = 2,
        post_retries: int = 0,
        backoff: float = 0.05,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=min(timeout, 3.0), sock_read=timeout
        )
        self.retries = retries
        self.post_retries = post_retries
        self.backoff = backoff
        token = base64.b64encode(f"{secret_key}:".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        self._own_http = http is None
        self._http = http

    @property
    def http(self) -> aiohttp.ClientSession:  # our own pool: made on first use, in the loop
        self._http = self._http or pooled_session(100, timeout=self.timeout)
        return self._http

    @classmethod
    def from_settings(
        cls, settings: PaymentsSettings, http: aiohttp.ClientSession | None = None
    ) -> TossPaymentsClient:
        return cls(
            settings.effective_pg_base_url,
            settings.pg_secret_key,
            settings.pg_timeout_seconds,
            http,
        )

    async def aclose(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> TossPaymentsClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # --- the API ---

    async def confirm(
        self, payment_key: str, order_id: str, amount: int, idempotency_key: str
    ) -> PgPayment:
        """결제 승인: ``POST /v1/payments/confirm``. Returns the approved payment.

        If the PG says the payment was already approved (``ALREADY_PROCESSED_PAYMENT``, e.g.
        our earlier confirm's response was lost), the payment is read back and returned when
        it is approved for this very order and amount; otherwise that is ``PgDeclined``."""
        _check_amount(amount)
        body = {"paymentKey": payment_key, "orderId": order_id, "amount": amount}
        try:
            data = await self._call("POST", "/v1/payments/confirm", body, idempotency_key)
        except PgDeclined as exc:
            if exc.code != "ALREADY_PROCESSED_PAYMENT":
                raise
            payment = await self._read_back(payment_key)
            if (
                payment.status is PgStatus.DONE
                and payment.order_id == order_id
                and payment.total_amount == amount
            ):
                return payment
            raise
        return _payment(data, unknown_on_error=True)

    async def cancel(
        self,
        payment_key: str,
        reason: str,
        idempotency_key: str,
        amount: int | None = None,
    ) -> PgPayment:
        """결제 취소: ``POST /v1/payments/{paymentKey}/cancel``; ``amount=None`` refunds all.

        A full cancel of a payment that is already fully canceled returns that payment (the
        refund happened, maybe by our own earlier call whose answer was lost)."""
        if amount is not None:
            _check_amount(amount)
        body: dict[str, Any] = {"cancelReason": reason}
        if amount is not None:
            body["cancelAmount"] = amount
        path = f"/v1/payments/{_seg(payment_key)}/cancel"
        try:
            data = await self._call("POST", path, body, idempotency_key)
        except PgDeclined as exc:
            if exc.code != "ALREADY_CANCELED_PAYMENT" or amount is not None:
                raise
            payment = await self._read_back(payment_key)
            if payment.status is PgStatus.CANCELED:
                return payment
            raise
        return _payment(data, unknown_on_error=True)

    async def get_by_payment_key(self, payment_key: str) -> PgPayment:
        """paymentKey로 결제 조회: ``GET /v1/payments/{paymentKey}``."""
        data = await self._call("GET", f"/v1/payments/{_seg(payment_key)}")
        return _payment(data, unknown_on_error=False)

    async def get_by_order_id(self, order_id: str) -> PgPayment:
        """orderId로 결제 조회: ``GET /v1/payments/orders/{orderId}``."""
        data = await self._call("GET", f"/v1/payments/orders/{_seg(order_id)}")
        return _payment(data, unknown_on_error=False)

    # --- billing keys (자동결제) ---

    async def issue_billing_key(
        self,
        customer_key: str,
        card_number: str,
        expiration_year: str,
        expiration_month: str,
        *,
        card_password: str | None = None,
        customer_identity_number: str | None = None,
        idempotency_key: str | None = None,
    ) -> PgBillingKey:
        """카드 자동결제 빌링키 발급: ``POST /v1/billing/authorizations/card``."""
        body: dict[str, Any] = {
            "customerKey": customer_key,
            "cardNumber": card_number,
            "cardExpirationYear": expiration_year,
            "cardExpirationMonth": expiration_month,
        }
        if card_password is not None:
            body["cardPassword"] = card_password
        if customer_identity_number is not None:
            body["customerIdentityNumber"] = customer_identity_number
        path = "/v1/billing/authorizations/card"
        return _billing_key(
            await self._call("POST", path, body, idempotency_key), unknown_on_error=True
        )

    async def charge_billing_key(
        self,
        billing_key: str,
        customer_key: str,
        amount: int,
        order_id: str,
        order_name: str,
        idempotency_key: str,
    ) -> PgPayment:
        """카드 자동결제 승인: ``POST /v1/billing/{billingKey}``. Returns the approved payment
        (a new payment key); a decline is ``PgDeclined``, a lost answer ``PgUnknownResult``.

        If the PG says the order id was already charged (``DUPLICATED_ORDER_ID``: our earlier
        charge whose answer was lost), the order's payment is read back and returned when it is
        DONE for this amount; otherwise that stays ``PgDeclined``."""
        _check_amount(amount)
        body = {
            "customerKey": customer_key,
            "amount": amount,
            "orderId": order_id,
            "orderName": order_name,
        }
        path = f"/v1/billing/{_seg(billing_key)}"
        try:
            data = await self._call("POST", path, body, idempotency_key)
        except PgDeclined as exc:
            if exc.code not in DUPLICATE_ORDER_CODES:
                raise
            try:
                payment = await self.get_by_order_id(order_id)
            except PgNotFound as missing:
                raise PgUnknownResult(missing.code, missing.message, missing.status) from exc
            if payment.status is PgStatus.DONE and payment.total_amount == amount:
                return payment
            raise
        return _payment(data, unknown_on_error=True)

    async def get_billing_key(self, billing_key: str) -> PgBillingKey:
        """The billing key as issued: ``GET /v1/billing/{billingKey}`` (the sandbox's; with Toss
        SnapShoe would keep the issue answer instead). Unknown: ``PgNotFound``."""
        data = await self._call("GET", f"/v1/billing/{_seg(billing_key)}")
        return _billing_key(data, unknown_on_error=False)

    # --- plumbing ---

    async def _read_back(self, payment_key: str) -> PgPayment:
        try:
            return await self.get_by_payment_key(payment_key)
        except PgNotFound as exc:
            raise PgUnknownResult(exc.code, exc.message, exc.status) from exc

    async def _call(
        self,
        method: Method,
        path: str,
        body: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One call, counted and timed (``snapshoe_pg_requests_total``, ``_seconds``)."""
        started = time.perf_counter()
        outcome = "error"
        try:
            answer = await self._send(method, path, body, idempotency_key)
            outcome = "ok"
            return answer
        except PgError as exc:
            outcome = PG_OUTCOMES.get(type(exc), "error")
            raise
        finally:
            PG_SECONDS.labels(method).observe(time.perf_counter() - started)
            PG_REQUESTS.labels(method, outcome).inc()

    async def _send(
        self,
        method: Method,
        path: str,
        body: dict[str, Any] | None,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        headers = dict(self._headers)
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        content = orjson.dumps(body) if body is not None else None
        if content is not None:
            headers["Content-Type"] = "application/json"
        # A POST may be sent again only under the same Idempotency-Key (the PG then answers
        # with the first result instead of doing it twice).
        replay_budget = self.retries if method == "GET" else self.post_retries
        if method == "POST" and idempotency_key is None:
            replay_budget = 0
        connect_budget = self.retries  # never reached the PG: always safe to send again
        url = URL(self.base_url + path, encoded=True)  # as given: _seg quoted the segments
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.http.request(
                    method, url, data=content, headers=headers, timeout=self.timeout
                ) as r:
                    status = r.status
                    retry_after = r.headers.get("Retry-After")
                    answer = await r.read()
            except NOT_SENT as exc:  # never reached the PG
                if connect_budget > 0:
                    connect_budget -= 1
                    await self._sleep(attempt)
                    continue
                raise PgUnknownResult("CONNECT_ERROR", repr(exc)) from exc
            except LOST_AFTER_SENDING as exc:  # sent, then timed out or cut: unknown
                if replay_budget > 0:
                    replay_budget -= 1
                    await self._sleep(attempt)
                    continue
                code = "TIMEOUT" if isinstance(exc, TimeoutError) else "TRANSPORT_ERROR"
                raise PgUnknownResult(code, repr(exc)) from exc
            if 200 <= status < 300:
                return _json_object(status, answer)
            code, message = _error_of(status, answer)
            kind = classify(status, code)
            if kind is PgUnknownResult and replay_budget > 0:
                replay_budget -= 1
                await self._sleep(attempt, retry_after)
                continue
            raise kind(code, message, status)

    async def _sleep(self, attempt: int, retry_after: str | None = None) -> None:
        delay = self.backoff * 2 ** (attempt - 1) * (0.5 + random.random())  # noqa: S311
        if retry_after and retry_after.isdigit():
            delay = max(delay, min(float(retry_after), 2.0))
        await asyncio.sleep(min(delay, 2.0))


def _check_amount(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"amount must be a positive integer (KRW), got {amount!r}")


def _seg(value: str) -> str:
    """One path segment, percent-encoded (a key can never walk to another path)."""
    if not value:
        raise ValueError("an empty path parameter")
    return quote(value, safe="")


def _json_object(status: int, content: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise PgUnknownResult("INVALID_RESPONSE", f"HTTP {status}: not a JSON object")
    return data


def _error_of(status: int, content: bytes) -> tuple[str, str]:
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("code"), str):
        return data["code"], str(data.get("message") or "")
    return f"HTTP_{status}", content.decode("utf-8", "replace")[:200]


def _payment(data: dict[str, Any], *, unknown_on_error: bool) -> PgPayment:
    """Parse a Payment. After a confirm/cancel a 2xx we cannot read is still a 2xx: the
    operation happened or not, we cannot tell, so it is an unknown result."""
    try:
        return PgPayment.model_validate(data)
    except ValidationError as exc:
        kind = PgUnknownResult if unknown_on_error else PgError
        raise kind("INVALID_RESPONSE", f"not a Toss Payment object: {exc!r}") from None
