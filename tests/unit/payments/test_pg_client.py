"""The PG adapter without a PG: error classification, retries, request shape, parsing of
real Toss payloads (a fake aiohttp session: tests/unit/payments/fake_pg_http.py)."""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import test_utils, web
from prometheus_client import REGISTRY
from tests.unit.payments.fake_pg_http import Answer, FakeSession, answer, connect_error

from snapshoe.payments.pg import (
    PgAuthError,
    PgDeclined,
    PgError,
    PgNotFound,
    PgPayment,
    PgStatus,
    PgUnknownResult,
    TossPaymentsClient,
    classify,
    parse_webhook,
)

# A Toss card payment as the real API renders it (docs.tosspayments.com, version 2022-11-16),
# with fields the adapter does not model, to prove they are tolerated.
TOSS_PAYMENT: dict[str, Any] = {
    "mId": "tosspayments",
    "lastTransactionKey": "9C62B18EEF0DE3EB7F4422EB6D14BC6E",
    "paymentKey": "5EnNZRJGvaBX7zk2yd8ydw26XvwXkLrx9POLqKQjmAw4b0e1",
    "orderId": "MC4wODU4ODQwMzg4NDk0",
    "orderName": "토스 티셔츠 외 2건",
    "taxExemptionAmount": 0,
    "status": "DONE",
    "requestedAt": "2024-02-13T12:17:57+09:00",
    "approvedAt": "2024-02-13T12:18:14+09:00",
    "useEscrow": False,
    "cultureExpense": False,
    "card": {
        "issuerCode": "71",
        "acquirerCode": "71",
        "number": "12345678****000*",
        "installmentPlanMonths": 0,
        "isInterestFree": False,
        "interestPayer": None,
        "approveNo": "00000000",
        "useCardPoint": False,
        "cardType": "신용",
        "ownerType": "개인",
        "acquireStatus": "READY",
        "receiptUrl": "https://dashboard.tosspayments.com/receipt/x",
        "amount": 1000,
    },
    "virtualAccount": None,
    "transfer": None,
    "mobilePhone": None,
    "giftCertificate": None,
    "cashReceipt": None,
    "cashReceipts": None,
    "discount": None,
    "cancels": None,
    "secret": None,
    "type": "NORMAL",
    "easyPay": {"provider": "토스페이", "amount": 0, "discountAmount": 0},
    "country": "KR",
    "failure": None,
    "isPartialCancelable": True,
    "receipt": {"url": "https://dashboard.tosspayments.com/receipt/x"},
    "checkout": {"url": "https://api.tosspayments.com/v1/payments/x/checkout"},
    "currency": "KRW",
    "totalAmount": 1000,
    "balanceAmount": 1000,
    "suppliedAmount": 909,
    "vat": 91,
    "taxFreeAmount": 0,
    "method": "카드",
    "version": "2022-11-16",
    "metadata": None,
}

Recorder = FakeSession


def client(fake: Recorder, **kw: Any) -> TossPaymentsClient:
    return TossPaymentsClient(
        "https://pg.test/", "test_sk_abc", 1.0, fake.session(), backoff=0.001, **kw
    )


def ok(body: dict[str, Any] | None = None) -> Answer:
    return answer(200, body or TOSS_PAYMENT)


def err(status: int, code: str, message: str = "msg") -> Answer:
    return answer(status, {"code": code, "message": message})


# What aiohttp raises once the request is out: the answer is late, or the connection is cut.
def read_timeout() -> aiohttp.SocketTimeoutError:
    return aiohttp.SocketTimeoutError("Timeout on reading data from socket")


def cut() -> aiohttp.ClientPayloadError:
    return aiohttp.ClientPayloadError("Response payload is not completed")


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (403, "REJECT_CARD_PAYMENT", PgDeclined),
        (400, "INVALID_REQUEST", PgDeclined),
        (400, "ALREADY_PROCESSED_PAYMENT", PgDeclined),
        (400, "ALREADY_CANCELED_PAYMENT", PgDeclined),
        (403, "NOT_CANCELABLE_AMOUNT", PgDeclined),
        (401, "UNAUTHORIZED_KEY", PgAuthError),
        (400, "INVALID_API_KEY", PgAuthError),
        (403, "INCORRECT_BASIC_AUTH_FORMAT", PgAuthError),
        (404, "NOT_FOUND_PAYMENT", PgNotFound),
        (404, "NOT_FOUND_PAYMENT_SESSION", PgNotFound),
        (400, "PROVIDER_ERROR", PgUnknownResult),
        (409, "IDEMPOTENT_REQUEST_PROCESSING", PgUnknownResult),
        (429, "HTTP_429", PgUnknownResult),
        (500, "FAILED_INTERNAL_SYSTEM_PROCESSING", PgUnknownResult),
        (502, "HTTP_502", PgUnknownResult),
        (503, "ANYTHING", PgUnknownResult),
    ],
)
def test_classify(status: int, code: str, kind: type[PgError]) -> None:
    assert classify(status, code) is kind


async def test_confirm_request_shape() -> None:
    fake = Recorder(ok())
    async with client(fake) as pg:
        p = await pg.confirm("pk/1 ?", "MC4wODU4ODQwMzg4NDk0", 1000, "idem-1")
    [req] = fake.requests
    assert req.method == "POST"
    assert str(req.url) == "https://pg.test/v1/payments/confirm"
    assert req.timeout == aiohttp.ClientTimeout(
        total=None, connect=1.0, sock_connect=1.0, sock_read=1.0
    )
    auth = base64.b64decode(req.headers["Authorization"].removeprefix("Basic "))
    assert auth == b"test_sk_abc:"
    assert req.headers["Idempotency-Key"] == "idem-1"
    assert req.headers["Content-Type"] == "application/json"
    assert orjson.loads(req.content) == {
        "paymentKey": "pk/1 ?",
        "orderId": "MC4wODU4ODQwMzg4NDk0",
        "amount": 1000,
    }
    assert p.status is PgStatus.DONE


async def test_paths_are_percent_encoded_segments() -> None:
    fake = Recorder(ok())
    async with client(fake) as pg:
        await pg.get_by_payment_key("../orders/x")
        await pg.get_by_order_id("a b/c")
        await pg.cancel("k/../x", "reason", "idem", amount=500)
    paths = [r.url.raw_path for r in fake.requests]
    assert paths == [
        "/v1/payments/..%2Forders%2Fx",
        "/v1/payments/orders/a%20b%2Fc",
        "/v1/payments/k%2F..%2Fx/cancel",
    ]
    assert orjson.loads(fake.requests[2].content) == {"cancelReason": "reason", "cancelAmount": 500}


def test_parses_a_real_toss_payment() -> None:
    p = PgPayment.model_validate(TOSS_PAYMENT)
    assert p.payment_key == TOSS_PAYMENT["paymentKey"]
    assert p.status is PgStatus.DONE
    assert p.is_approved
    assert p.is_final
    assert p.total_amount == 1000
    assert p.cancels == []
    assert p.card is not None
    assert p.card.approve_no == "00000000"
    assert p.approved_at is not None
    assert p.approved_at.isoformat() == "2024-02-13T12:18:14+09:00"


def test_parses_cancels() -> None:
    body = {
        **TOSS_PAYMENT,
        "status": "PARTIAL_CANCELED",
        "balanceAmount": 600,
        "cancels": [
            {
                "transactionKey": "090A796806E726BBB929F4A2CA7DB9A7",
                "cancelReason": "테스트 결제 취소",
                "taxExemptionAmount": 0,
                "canceledAt": "2024-02-13T12:20:23+09:00",
                "easyPayDiscountAmount": 0,
                "receiptKey": None,
                "cancelAmount": 400,
                "taxFreeAmount": 0,
                "refundableAmount": 600,
                "cancelStatus": "DONE",
                "cancelRequestId": None,
            }
        ],
    }
    p = PgPayment.model_validate(body)
    assert p.refunded_amount == 400
    assert p.is_approved
    assert p.cancels[0].refundable_amount == 600


async def test_declined_and_not_found() -> None:
    fake = Recorder(err(403, "REJECT_CARD_PAYMENT", "한도초과"))
    async with client(fake) as pg:
        with pytest.raises(PgDeclined) as info:
            await pg.confirm("pk", "ord_123456", 1000, "i")
    assert (info.value.code, info.value.message, info.value.status) == (
        "REJECT_CARD_PAYMENT",
        "한도초과",
        403,
    )
    async with client(Recorder(err(404, "NOT_FOUND_PAYMENT"))) as pg:
        with pytest.raises(PgNotFound):
            await pg.get_by_order_id("ord_123456")


async def test_get_retries_5xx_then_succeeds() -> None:
    fake = Recorder(err(503, "X"), err(500, "FAILED_INTERNAL_SYSTEM_PROCESSING"), ok())
    async with client(fake, retries=2) as pg:
        p = await pg.get_by_order_id("MC4wODU4ODQwMzg4NDk0")
    assert p.order_id == "MC4wODU4ODQwMzg4NDk0"
    assert len(fake.requests) == 3


async def test_get_gives_up_after_bounded_retries() -> None:
    fake = Recorder(err(503, "X"))
    async with client(fake, retries=2) as pg:
        with pytest.raises(PgUnknownResult) as info:
            await pg.get_by_payment_key("pk")
    assert info.value.status == 503
    assert len(fake.requests) == 3


async def test_get_retries_timeouts() -> None:
    fake = Recorder(read_timeout(), ok())
    async with client(fake) as pg:
        assert (await pg.get_by_payment_key("pk")).status is PgStatus.DONE
    assert len(fake.requests) == 2


async def test_confirm_is_not_resent_by_default() -> None:
    for first, code in (
        (read_timeout(), "TIMEOUT"),
        (TimeoutError(), "TIMEOUT"),
        (cut(), "TRANSPORT_ERROR"),
        (aiohttp.ServerDisconnectedError(), "TRANSPORT_ERROR"),
        (err(500, "X"), "X"),
    ):
        fake = Recorder(first, ok())
        async with client(fake) as pg:
            with pytest.raises(PgUnknownResult) as info:
                await pg.confirm("pk", "ord_123456", 1000, "i")
        assert len(fake.requests) == 1, first
        assert info.value.code == code


async def test_post_retries_resend_the_same_idempotency_key() -> None:
    fake = Recorder(cut(), err(409, "IDEMPOTENT_REQUEST_PROCESSING"), ok())
    async with client(fake, post_retries=2) as pg:
        p = await pg.confirm("pk", "MC4wODU4ODQwMzg4NDk0", 1000, "same-key")
    assert p.status is PgStatus.DONE
    assert [r.headers["Idempotency-Key"] for r in fake.requests] == ["same-key"] * 3
    assert len({r.content for r in fake.requests}) == 1


async def test_connect_errors_are_always_retried_because_nothing_was_sent() -> None:
    fake = Recorder(connect_error(), ok())
    async with client(fake, retries=1) as pg:
        assert (await pg.confirm("pk", "ord_123456", 1000, "i")).status is PgStatus.DONE
    assert len(fake.requests) == 2
    fake = Recorder(aiohttp.ConnectionTimeoutError("no connection within the timeout"))
    async with client(fake, retries=1) as pg:
        with pytest.raises(PgUnknownResult) as info:
            await pg.confirm("pk", "ord_123456", 1000, "i")
    assert info.value.code == "CONNECT_ERROR"
    assert len(fake.requests) == 2


async def test_a_2xx_that_is_not_a_payment() -> None:
    for bad in (answer(200, content=b"<html>"), ok({"status": "DONE"})):
        async with client(Recorder(bad)) as pg:
            with pytest.raises(PgUnknownResult):  # confirm: it may have happened
                await pg.confirm("pk", "ord_123456", 1000, "i")
    async with client(Recorder(ok({"status": "WEIRD"}))) as pg:
        with pytest.raises(PgError) as info:
            await pg.get_by_payment_key("pk")
    assert not isinstance(info.value, PgUnknownResult)


async def test_non_json_error_bodies() -> None:
    async with client(Recorder(answer(502, text="Bad gateway"))) as pg:
        with pytest.raises(PgUnknownResult) as info:
            await pg.confirm("pk", "ord_123456", 1000, "i")
    assert info.value.code == "HTTP_502"
    assert info.value.message == "Bad gateway"


async def test_already_processed_reads_the_payment_back() -> None:
    oid, key = TOSS_PAYMENT["orderId"], TOSS_PAYMENT["paymentKey"]
    fake = Recorder(err(400, "ALREADY_PROCESSED_PAYMENT"), ok())
    async with client(fake) as pg:
        p = await pg.confirm(key, oid, 1000, "i2")
    assert p.status is PgStatus.DONE
    assert [r.method for r in fake.requests] == ["POST", "GET"]
    # Approved, but for another amount: that is not our approval.
    fake = Recorder(err(400, "ALREADY_PROCESSED_PAYMENT"), ok())
    async with client(fake) as pg:
        with pytest.raises(PgDeclined) as info:
            await pg.confirm(key, oid, 999, "i3")
    assert info.value.code == "ALREADY_PROCESSED_PAYMENT"
    # Already canceled since: not an approval to report either.
    fake = Recorder(
        err(400, "ALREADY_PROCESSED_PAYMENT"), ok({**TOSS_PAYMENT, "status": "CANCELED"})
    )
    async with client(fake) as pg:
        with pytest.raises(PgDeclined):
            await pg.confirm(key, oid, 1000, "i4")


async def test_already_canceled_full_cancel_reads_back() -> None:
    canceled = {**TOSS_PAYMENT, "status": "CANCELED", "balanceAmount": 0}
    fake = Recorder(err(400, "ALREADY_CANCELED_PAYMENT"), ok(canceled))
    async with client(fake) as pg:
        p = await pg.cancel("pk", "again", "i")
    assert p.status is PgStatus.CANCELED
    fake = Recorder(err(400, "ALREADY_CANCELED_PAYMENT"))
    async with client(fake) as pg:
        with pytest.raises(PgDeclined):
            await pg.cancel("pk", "again", "i", amount=100)  # a partial cancel is not a retry


@pytest.mark.parametrize("amount", [0, -1, True, 1.5, "1000"])
async def test_bad_amounts_are_a_programming_error(amount: Any) -> None:
    async with client(Recorder(ok())) as pg:
        with pytest.raises(ValueError, match="amount"):
            await pg.confirm("pk", "ord_123456", amount, "i")


def test_parse_webhook() -> None:
    body = orjson.dumps(
        {"eventType": "PAYMENT_STATUS_CHANGED", "createdAt": "2022-01-01T00:00:00.000000",
         "data": TOSS_PAYMENT}
    )  # fmt: skip
    hint = parse_webhook(body)
    assert hint.event_type == "PAYMENT_STATUS_CHANGED"
    assert hint.payment_key == TOSS_PAYMENT["paymentKey"]
    assert hint.order_id == TOSS_PAYMENT["orderId"]
    assert hint.status == "DONE"
    for bad in (b"", b"[]", b"{}", b'{"eventType": "X", "data": 1}', b'{"data": {}}'):
        with pytest.raises(PgError):
            parse_webhook(bad)


async def test_its_own_pool_is_made_on_first_use_and_closed_by_aclose() -> None:
    pg = TossPaymentsClient("http://127.0.0.1:1", "sk")
    assert pg._http is None  # nothing made at construction (outside a loop, at import)
    session = pg.http
    assert pg.http is session
    await pg.aclose()
    assert session.closed
    fake = Recorder(ok())
    async with client(fake) as shared:
        await shared.get_by_payment_key("pk")
    assert not fake.closed  # a shared pool is its owner's to close


def _pg_count(method: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "snapshoe_pg_requests_total", {"method": method, "outcome": outcome}
    )
    return value or 0.0


def _pg_timed(method: str) -> float:
    value = REGISTRY.get_sample_value("snapshoe_pg_request_seconds_count", {"method": method})
    return value or 0.0


async def test_every_call_is_counted_by_outcome_and_timed() -> None:
    outcomes: list[tuple[Answer | BaseException, str]] = [
        (ok(), "ok"),
        (err(403, "REJECT_CARD_PAYMENT"), "declined"),
        (err(404, "NOT_FOUND_PAYMENT"), "not_found"),
        (read_timeout(), "unknown"),
        (cut(), "unknown"),
        (err(503, "X"), "unknown"),
        (err(401, "UNAUTHORIZED_KEY"), "auth_error"),
    ]
    for first, outcome in outcomes:
        before, timed = _pg_count("POST", outcome), _pg_timed("POST")
        async with client(Recorder(first)) as pg:
            with contextlib.suppress(PgError):
                await pg.confirm("pk", "ord_123456", 1000, "i")
        assert _pg_count("POST", outcome) == before + 1, outcome
        assert _pg_timed("POST") == timed + 1


async def test_the_requests_on_the_wire() -> None:
    """The same requests through aiohttp to a real local server: the path stays as the adapter
    quoted it (no re-quoting, no dot-segment folding), the headers and body arrive as built."""
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((request.method, request.raw_path, dict(request.headers), await request.read()))
        return web.json_response(TOSS_PAYMENT)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with test_utils.TestServer(app, host="127.0.0.1") as server:
        base = str(server.make_url("/"))
        async with TossPaymentsClient(base, "test_sk_abc", 2.0) as pg:
            await pg.confirm("pk/1 ?", "ord_123456", 1000, "idem-1")
            await pg.get_by_payment_key("../orders/x")
            await pg.cancel("k/../x", "reason", "idem-2", amount=500)
    (m1, p1, h1, b1), (m2, p2, _, b2), (m3, p3, _, b3) = seen
    assert (m1, p1, m2, p2, m3, p3) == (
        "POST",
        "/v1/payments/confirm",
        "GET",
        "/v1/payments/..%2Forders%2Fx",
        "POST",
        "/v1/payments/k%2F..%2Fx/cancel",
    )
    assert base64.b64decode(h1["Authorization"].removeprefix("Basic ")) == b"test_sk_abc:"
    assert h1["Idempotency-Key"] == "idem-1"
    assert h1["Content-Type"] == "application/json"
    assert orjson.loads(b1) == {"paymentKey": "pk/1 ?", "orderId": "ord_123456", "amount": 1000}
    assert b2 == b""
    assert orjson.loads(b3) == {"cancelReason": "reason", "cancelAmount": 500}
