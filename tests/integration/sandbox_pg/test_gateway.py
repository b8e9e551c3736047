"""The sandbox PG as ``snapshoe up`` runs it: started by the platform, reached through the
gateway at ``/pg/...`` (prefix stripped) and directly, with the platform's secret key."""

from __future__ import annotations

import secrets
import uuid

import pytest
from tests.support.platform import Platform

from snapshoe.payments.pg import PgStatus, PgUnknownResult, TossPaymentsClient


async def test_buyer_authorizes_through_the_gateway_and_the_adapter_confirms(
    platform: Platform,
) -> None:
    oid = "ord_" + secrets.token_urlsafe(12)
    async with platform.client() as browser:
        r = await browser.post(
            "/pg/v1/sandbox/authorizations",
            json={"order_id": oid, "amount": 159000, "card_number": "4330123412340000"},
        )
        assert r.status_code == 200, r.text
        key = r.json()["payment_key"]
        # The Toss API is behind the secret key at the gateway too.
        denied = await browser.post(
            "/pg/v1/payments/confirm", json={"paymentKey": key, "orderId": oid, "amount": 159000}
        )
        assert denied.status_code == 401
        assert denied.json()["code"] == "UNAUTHORIZED_KEY"
    # What the payments service does: the configured base URL (the sandbox itself) and key.
    async with TossPaymentsClient.from_settings(platform.settings) as pg:
        assert pg.base_url == platform.url("sandbox_pg")
        p = await pg.confirm(key, oid, 159000, str(uuid.uuid4()))
        assert p.status is PgStatus.DONE
    # The same API through the gateway prefix.
    gateway_pg = TossPaymentsClient(
        platform.gateway + "/pg", platform.settings.pg_secret_key, timeout=5
    )
    async with gateway_pg:
        assert (await gateway_pg.get_by_order_id(oid)).payment_key == key


async def test_lost_response_through_the_platform_sandbox(platform: Platform) -> None:
    oid = "ord_" + secrets.token_urlsafe(12)
    async with platform.client() as browser:
        r = await browser.post(
            "/pg/v1/sandbox/authorizations",
            json={"order_id": oid, "amount": 1000, "card_number": "4330123412340009"},
        )
        key = r.json()["payment_key"]
    async with TossPaymentsClient.from_settings(platform.settings) as pg:
        with pytest.raises(PgUnknownResult):
            await pg.confirm(key, oid, 1000, str(uuid.uuid4()))
        assert (await pg.get_by_order_id(oid)).status is PgStatus.DONE
