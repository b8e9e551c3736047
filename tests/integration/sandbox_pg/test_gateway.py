"""The sandbox PG as ``snapshoe up`` runs it: started by the platform; a buyer reaches its card
authorization through the gateway at ``/pg/...`` (prefix stripped), the services reach its Toss
API directly, with the platform's secret key. The gateway routes nothing else of it."""

from __future__ import annotations

import secrets
import uuid

import pytest
from tests.integration.sandbox_pg.window import (
    STORE_OK,
    open_window,
    redirected,
    submit,
    window_params,
)
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
        # The Toss API and the sandbox's knobs are not routed at all (issue 12, item 5).
        for method, path in [
            ("POST", "/pg/v1/payments/confirm"),
            ("GET", f"/pg/v1/payments/orders/{oid}"),
            ("GET", "/pg/v1/sandbox/config"),
        ]:
            denied = await browser.request(
                method, path, json={"paymentKey": key, "orderId": oid, "amount": 159000}
            )
            assert denied.status_code == 404, denied.text
            assert denied.json()["code"] == "not_found"
    # What the payments service does: the configured base URL (the sandbox itself) and key.
    async with TossPaymentsClient.from_settings(platform.settings) as pg:
        assert pg.base_url == platform.url("sandbox_pg")
        p = await pg.confirm(key, oid, 159000, str(uuid.uuid4()))
        assert p.status is PgStatus.DONE
        assert (await pg.get_by_order_id(oid)).payment_key == key


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


async def test_a_buyer_pays_in_the_payment_window_through_the_gateway(platform: Platform) -> None:
    oid = "ord_" + secrets.token_urlsafe(12)
    async with platform.client() as browser:
        page = await browser.get("/pg/v1/sandbox/checkout", params=window_params(oid, 99000))
        assert page.status_code == 200, page.text
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "99,000원" in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        # The form's relative action resolves to the gateway's /pg path, which is routed too.
        form = await open_window(browser, "/pg/v1/sandbox/checkout", window_params(oid, 99000))
        assert form.action == f"{platform.gateway}/pg/v1/sandbox/checkout"
        params = redirected(await submit(browser, form), STORE_OK)
        assert params["orderId"] == oid
        # Other methods on the window are not routed.
        denied = await browser.put("/pg/v1/sandbox/checkout")
        assert denied.status_code == 404, denied.text
    async with TossPaymentsClient.from_settings(platform.settings) as pg:
        p = await pg.confirm(params["paymentKey"], oid, 99000, str(uuid.uuid4()))
        assert p.status is PgStatus.DONE
