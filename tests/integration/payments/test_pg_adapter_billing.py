"""The PG adapter's billing-key calls (``issue_billing_key``, ``charge_billing_key``,
``get_billing_key``) against the real sandbox PG over HTTP."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from tests.integration.sandbox_pg.server import SECRET, SandboxServer, basic, flush_namespace

from snapshoe.payments.pg import (
    PgAuthError,
    PgBillingKey,
    PgDeclined,
    PgNotFound,
    PgStatus,
    PgUnknownResult,
    TossPaymentsClient,
)

NAMESPACE = "snapshoe_pgtest_billing"
AMOUNT = 239000


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


def oid() -> str:
    return "ord_" + secrets.token_urlsafe(12)


def idem() -> str:
    return str(uuid.uuid4())


async def charges(admin: httpx.AsyncClient, order_id: str) -> int:
    n: int = (await admin.get(f"/v1/sandbox/orders/{order_id}/charges")).json()["charges"]
    return n


async def issued(pg: TossPaymentsClient, card: str = "4330123412340000") -> PgBillingKey:
    return await pg.issue_billing_key("cust_" + secrets.token_hex(6), card, "30", "12")


async def test_issue_and_look_up(pg: TossPaymentsClient) -> None:
    b = await pg.issue_billing_key(
        "cust_a1", "4330123412341234", "30", "12", card_password="12", idempotency_key=idem()
    )
    assert b.customer_key == "cust_a1"
    assert b.card_number == "43301234****123*"
    assert b.fingerprint is not None
    assert len(b.fingerprint) == 64
    assert await pg.get_billing_key(b.billing_key) == b
    other = await pg.issue_billing_key("cust_b2", "4330123412341234", "30", "12")
    assert other.billing_key != b.billing_key
    assert other.fingerprint == b.fingerprint


async def test_charge_approves(pg: TossPaymentsClient, admin: httpx.AsyncClient) -> None:
    b = await issued(pg)
    order_id = oid()
    p = await pg.charge_billing_key(b.billing_key, b.customer_key, AMOUNT, order_id, "Dunk", idem())
    assert p.status is PgStatus.DONE
    assert p.order_id == order_id
    assert p.total_amount == AMOUNT
    assert p.method == "카드"
    assert p.approved_at is not None
    assert await pg.get_by_order_id(order_id) == p
    assert await pg.get_by_payment_key(p.payment_key) == p
    assert await charges(admin, order_id) == 1


async def test_decline_is_pg_declined(pg: TossPaymentsClient, admin: httpx.AsyncClient) -> None:
    b = await issued(pg, "4330123412340002")
    order_id = oid()
    with pytest.raises(PgDeclined) as info:
        await pg.charge_billing_key(b.billing_key, b.customer_key, AMOUNT, order_id, "x", idem())
    assert info.value.code == "REJECT_CARD_PAYMENT"
    assert (await pg.get_by_order_id(order_id)).status is PgStatus.ABORTED
    assert await charges(admin, order_id) == 0


async def test_lost_answer_is_unknown_and_charging_again_charges_nothing_more(
    pg: TossPaymentsClient, admin: httpx.AsyncClient
) -> None:
    b = await issued(pg, "4330123412340009")
    order_id = oid()
    key = idem()
    with pytest.raises(PgUnknownResult) as info:
        await pg.charge_billing_key(b.billing_key, b.customer_key, AMOUNT, order_id, "x", key)
    assert info.value.code == "TRANSPORT_ERROR"
    found = await pg.get_by_order_id(order_id)
    assert found.status is PgStatus.DONE
    # The same key: the stored answer. A new key: DUPLICATED_ORDER_ID, read back as ours.
    same = await pg.charge_billing_key(b.billing_key, b.customer_key, AMOUNT, order_id, "x", key)
    fresh = await pg.charge_billing_key(
        b.billing_key, b.customer_key, AMOUNT, order_id, "x", idem()
    )
    assert same.payment_key == fresh.payment_key == found.payment_key
    assert await charges(admin, order_id) == 1
    # Another amount is not our charge: the duplicate stays a refusal.
    with pytest.raises(PgDeclined) as dup:
        await pg.charge_billing_key(b.billing_key, b.customer_key, 1000, order_id, "x", idem())
    assert dup.value.code == "DUPLICATED_ORDER_ID"
    assert await charges(admin, order_id) == 1


async def test_a_post_retry_under_the_same_key_recovers_a_lost_answer(
    server: SandboxServer, admin: httpx.AsyncClient
) -> None:
    async with TossPaymentsClient(server.url, SECRET, timeout=3, post_retries=1) as pg:
        b = await issued(pg, "4330123412340009")
        order_id = oid()
        p = await pg.charge_billing_key(
            b.billing_key, b.customer_key, AMOUNT, order_id, "x", idem()
        )
    assert p.status is PgStatus.DONE
    assert await charges(admin, order_id) == 1


async def test_refusals(pg: TossPaymentsClient, admin: httpx.AsyncClient) -> None:
    b = await issued(pg)
    order_id = oid()
    with pytest.raises(PgDeclined) as info:
        await pg.charge_billing_key(b.billing_key, "someone_else", AMOUNT, order_id, "x", idem())
    assert info.value.code == "NOT_MATCHES_CUSTOMER_KEY"
    with pytest.raises(PgDeclined) as info:
        await pg.charge_billing_key("no/such=key", b.customer_key, AMOUNT, order_id, "x", idem())
    assert info.value.code == "INVALID_BILL_KEY_REQUEST"
    with pytest.raises(PgNotFound) as missing:
        await pg.get_billing_key("no/such=key")
    assert missing.value.code == "NOT_FOUND_BILLING"
    with pytest.raises(PgDeclined) as info:
        await pg.issue_billing_key("cust_x1", "12", "30", "12")
    assert info.value.code == "INVALID_CARD_NUMBER"
    assert await charges(admin, order_id) == 0


async def test_a_pg_5xx_is_unknown(pg: TossPaymentsClient, admin: httpx.AsyncClient) -> None:
    b = await issued(pg)
    await admin.put("/v1/sandbox/config", json={"error_rate": 1.0})
    order_id = oid()
    with pytest.raises(PgUnknownResult) as info:
        await pg.charge_billing_key(b.billing_key, b.customer_key, AMOUNT, order_id, "x", idem())
    assert info.value.status == 500
    with pytest.raises(PgNotFound):
        await pg.get_by_order_id(order_id)  # nothing was done


async def test_a_bad_secret_key_is_an_auth_error(server: SandboxServer) -> None:
    async with TossPaymentsClient(server.url, "test_sk_wrong", timeout=3) as pg:
        with pytest.raises(PgAuthError):
            await pg.charge_billing_key("k", "cust_1", 1000, oid(), "x", idem())
        with pytest.raises(PgAuthError):
            await pg.get_billing_key("k")
