"""The PG adapter (``snapshoe.payments.pg``) against the real sandbox PG over HTTP."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from tests.integration.sandbox_pg.server import (
    SECRET,
    SandboxServer,
    basic,
    flush_namespace,
    free_port,
)

from snapshoe.payments.pg import (
    PgAuthError,
    PgDeclined,
    PgNotFound,
    PgPayment,
    PgStatus,
    PgUnknownResult,
    TossPaymentsClient,
)
from snapshoe.payments.settings import PaymentsSettings

NAMESPACE = "snapshoe_pgtest_adapter"
AMOUNT = 219000


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    flush_namespace(NAMESPACE)
    s = SandboxServer(NAMESPACE)
    s.start()
    try:
        yield s
    finally:
        s.stop()
        flush_namespace(NAMESPACE)


@pytest.fixture
async def admin(server: SandboxServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, headers=basic(), timeout=10) as client:
        await client.delete("/v1/sandbox/config")
        yield client


@pytest.fixture
async def pg(server: SandboxServer, admin: httpx.AsyncClient) -> AsyncIterator[TossPaymentsClient]:
    async with TossPaymentsClient(server.url, SECRET, timeout=3) as client:
        yield client


async def authorize(
    admin: httpx.AsyncClient, card: str = "4330123412340000", amount: int = AMOUNT
) -> tuple[str, str]:
    oid = "ord_" + secrets.token_urlsafe(12)
    r = await admin.post(
        "/v1/sandbox/authorizations",
        json={"order_id": oid, "amount": amount, "card_number": card},
    )
    assert r.status_code == 200, r.text
    return r.json()["payment_key"], oid


async def charges(admin: httpx.AsyncClient, oid: str) -> dict[str, int]:
    data: dict[str, int] = (await admin.get(f"/v1/sandbox/orders/{oid}/charges")).json()
    return data


def idem() -> str:
    return str(uuid.uuid4())


async def test_approve(pg: TossPaymentsClient, admin: httpx.AsyncClient) -> None:
    key, oid = await authorize(admin)
    p = await pg.confirm(key, oid, AMOUNT, idem())
    assert isinstance(p, PgPayment)
    assert p.status is PgStatus.DONE
    assert p.is_approved
    assert p.is_final
    assert p.payment_key == key
    assert p.order_id == oid
    assert p.total_amount == p.balance_amount == AMOUNT
    assert p.approved_at is not None
    assert p.approved_at.utcoffset() is not None
    assert p.approved_at.utcoffset().total_seconds() == 9 * 3600  # type: ignore[union-attr]
    assert p.card is not None
    assert p.card.number is not None
    assert p.card.number.endswith("0000")
    assert p.cancels == []
    assert p.refunded_amount == 0
    assert await pg.get_by_order_id(oid) == p
    assert await pg.get_by_payment_key(key) == p
    assert (await charges(admin, oid))["charges"] == 1


async def test_decline(pg: TossPaymentsClient, admin: httpx.AsyncClient) -> None:
    key, oid = await authorize(admin, card="4330123412340002")
    with pytest.raises(PgDeclined) as info:
        await pg.confirm(key, oid, AMOUNT, idem())
    assert info.value.code == "REJECT_CARD_PAYMENT"
    assert info.value.status == 403
    p = await pg.get_by_order_id(oid)
    assert p.status is PgStatus.ABORTED
    assert p.is_final
    assert not p.is_approved
    assert p.failure is not None
    assert p.failure.code == "REJECT_CARD_PAYMENT"
    assert (await charges(admin, oid))["charges"] == 0


async def test_lost_response_is_unknown_then_found_approved(
    pg: TossPaymentsClient, admin: httpx.AsyncClient
) -> None:
    key, oid = await authorize(admin, card="4330123412340009")
    first_key = idem()
    with pytest.raises(PgUnknownResult) as info:
        await pg.confirm(key, oid, AMOUNT, first_key)
    assert info.value.code == "TRANSPORT_ERROR"
    # What a reconciler does: ask by order id.
    found = await pg.get_by_order_id(oid)
    assert found.status is PgStatus.DONE
    assert found.payment_key == key
    assert (await charges(admin, oid))["charges"] == 1
    # Confirming again (same key: the stored answer; a new key: read back) charges nothing more.
    assert (await pg.confirm(key, oid, AMOUNT, first_key)).status is PgStatus.DONE
    assert (await pg.confirm(key, oid, AMOUNT, idem())).status is PgStatus.DONE
    assert (await charges(admin, oid))["charges"] == 1


async def test_hung_response_is_an_unknown_timeout(
    server: SandboxServer, admin: httpx.AsyncClient
) -> None:
    await admin.put("/v1/sandbox/config", json={"lost_response_mode": "hang", "hang_seconds": 5})
    key, oid = await authorize(admin, card="4330123412340009")
    async with TossPaymentsClient(server.url, SECRET, timeout=0.5) as pg:
        started = time.monotonic()
        with pytest.raises(PgUnknownResult) as info:
            await pg.confirm(key, oid, AMOUNT, idem())
        assert info.value.code == "TIMEOUT"
        assert time.monotonic() - started < 2
        assert (await pg.get_by_order_id(oid)).status is PgStatus.DONE
    assert (await charges(admin, oid))["charges"] == 1


async def test_post_retry_with_the_same_key_recovers_a_lost_response(
    server: SandboxServer, admin: httpx.AsyncClient
) -> None:
    key, oid = await authorize(admin, card="4330123412340009")
    async with TossPaymentsClient(server.url, SECRET, timeout=3, post_retries=1) as pg:
        p = await pg.confirm(key, oid, AMOUNT, idem())
    assert p.status is PgStatus.DONE
    assert (await charges(admin, oid))["charges"] == 1


async def test_amount_mismatch_is_declined_and_nothing_charged(
    pg: TossPaymentsClient, admin: httpx.AsyncClient
) -> None:
    key, oid = await authorize(admin)
    with pytest.raises(PgDeclined) as info:
        await pg.confirm(key, oid, AMOUNT - 1, idem())
    assert info.value.code == "INVALID_REQUEST"
    assert info.value.status == 400
    assert (await charges(admin, oid))["charges"] == 0
    assert (await pg.get_by_payment_key(key)).status is PgStatus.READY


async def test_many_concurrent_confirms_all_see_one_approval(
    pg: TossPaymentsClient, admin: httpx.AsyncClient
) -> None:
    key, oid = await authorize(admin)
    results = await asyncio.gather(*(pg.confirm(key, oid, AMOUNT, idem()) for _ in range(100)))
    assert {p.status for p in results} == {PgStatus.DONE}
    assert len({p.last_transaction_key for p in results}) == 1
    assert (await charges(admin, oid))["charges"] == 1


async def test_cancel_full_refund_once(pg: TossPaymentsClient, admin: httpx.AsyncClient) -> None:
    key, oid = await authorize(admin)
    await pg.confirm(key, oid, AMOUNT, idem())
    refund_key = idem()
    p = await pg.cancel(key, "주문 취소", refund_key)
    assert p.status is PgStatus.CANCELED
    assert p.balance_amount == 0
    assert p.refunded_amount == AMOUNT
    assert p.cancels[0].cancel_reason == "주문 취소"
    # Same key: replayed; a new key: already canceled, read back. One refund at the PG.
    assert await pg.cancel(key, "주문 취소", refund_key) == p
    assert (await pg.cancel(key, "again", idem())).status is PgStatus.CANCELED
    counts = await charges(admin, oid)
    assert counts["refunds"] == 1
    assert counts["refunded_amount"] == AMOUNT


async def test_partial_cancel_and_over_refund(
    pg: TossPaymentsClient, admin: httpx.AsyncClient
) -> None:
    key, oid = await authorize(admin, amount=10000)
    await pg.confirm(key, oid, 10000, idem())
    p = await pg.cancel(key, "size swap", idem(), amount=4000)
    assert p.status is PgStatus.PARTIAL_CANCELED
    assert p.balance_amount == 6000
    with pytest.raises(PgDeclined) as info:
        await pg.cancel(key, "too much", idem(), amount=6001)
    assert info.value.code == "NOT_CANCELABLE_AMOUNT"
    key2, _ = await authorize(admin)
    with pytest.raises(PgDeclined) as info:
        await pg.cancel(key2, "not paid", idem())
    assert info.value.code == "NOT_CANCELABLE_PAYMENT"


async def test_bad_secret_key_is_an_auth_error(server: SandboxServer) -> None:
    async with TossPaymentsClient(server.url, "test_sk_wrong", timeout=3) as pg:
        with pytest.raises(PgAuthError) as info:
            await pg.confirm("k", "ord_123456", 1000, idem())
        assert info.value.code == "UNAUTHORIZED_KEY"
        assert info.value.status == 401
        with pytest.raises(PgAuthError):
            await pg.get_by_order_id("ord_123456")
        with pytest.raises(PgAuthError):
            await pg.get_by_payment_key("k")
        with pytest.raises(PgAuthError):
            await pg.cancel("k", "x", idem())


async def test_not_found(pg: TossPaymentsClient) -> None:
    with pytest.raises(PgNotFound):
        await pg.get_by_order_id("ord_" + secrets.token_hex(8))
    with pytest.raises(PgNotFound):
        await pg.get_by_payment_key("no/such key?")
    with pytest.raises(PgNotFound) as info:
        await pg.confirm("nope", "ord_123456", 1000, idem())
    assert info.value.code == "NOT_FOUND_PAYMENT_SESSION"


async def test_pg_5xx_is_unknown_and_charges_nothing(
    pg: TossPaymentsClient, admin: httpx.AsyncClient
) -> None:
    await admin.put("/v1/sandbox/config", json={"error_rate": 1.0})
    key, oid = await authorize(admin)
    with pytest.raises(PgUnknownResult) as info:
        await pg.confirm(key, oid, AMOUNT, idem())
    assert info.value.status == 500
    assert (await charges(admin, oid))["charges"] == 0


async def test_unreachable_pg_is_unknown_after_bounded_retries() -> None:
    async with TossPaymentsClient(f"http://127.0.0.1:{free_port()}", SECRET, timeout=1) as pg:
        started = time.monotonic()
        with pytest.raises(PgUnknownResult) as info:
            await pg.confirm("k", "ord_123456", 1000, idem())
        assert info.value.code == "CONNECT_ERROR"
        assert time.monotonic() - started < 2


async def test_slow_pg_times_out(server: SandboxServer, admin: httpx.AsyncClient) -> None:
    await admin.put("/v1/sandbox/config", json={"latency_ms": 800})
    key, _ = await authorize(admin)
    async with TossPaymentsClient(server.url, SECRET, timeout=0.3, retries=1) as pg:
        started = time.monotonic()
        with pytest.raises(PgUnknownResult) as info:
            await pg.get_by_payment_key(key)
        assert info.value.code == "TIMEOUT"
        # One try and one retry of 0.3 s each, plus a short backoff.
        assert 0.6 <= time.monotonic() - started < 1.5


def test_base_url_and_key_come_from_settings() -> None:
    local = TossPaymentsClient.from_settings(PaymentsSettings(sandbox_pg_port=18999))
    assert local.base_url == "http://127.0.0.1:18999"
    real = TossPaymentsClient.from_settings(
        PaymentsSettings(pg_base_url="https://api.tosspayments.com/", pg_secret_key="live_sk_x")
    )
    assert real.base_url == "https://api.tosspayments.com"
    assert real._headers["Authorization"] == "Basic bGl2ZV9za194Og=="  # base64("live_sk_x:")
