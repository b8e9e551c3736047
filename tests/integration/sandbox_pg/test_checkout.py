"""The payment window (결제창) over real HTTP: the page, its form, the redirects to the store's
successUrl / failUrl, and what it refuses (altered forms, URLs that are not http(s))."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx
import pytest
from tests.integration.sandbox_pg.conftest import order_id
from tests.integration.sandbox_pg.server import SECRET
from tests.integration.sandbox_pg.window import (
    STORE_FAIL,
    STORE_OK,
    Form,
    open_window,
    redirected,
    submit,
    window_params,
)

from snapshoe.sandbox_pg import checkout

PATH = "/v1/sandbox/checkout"
PAYMENT_KEY_RE = re.compile(r"^[A-Za-z0-9]{50}$")


@pytest.fixture
async def browser(pg: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """The buyer's browser: no secret key (``pg`` reset the knobs first)."""
    async with httpx.AsyncClient(base_url=pg.base_url, timeout=10) as client:
        yield client


def csp_of(r: httpx.Response) -> dict[str, str]:
    policy = r.headers["content-security-policy"]
    return {d.split(" ", 1)[0]: d.split(" ", 1)[1] for d in (p.strip() for p in policy.split(";"))}


async def test_the_page_shows_the_order_with_labels_and_a_strict_csp(
    browser: httpx.AsyncClient,
) -> None:
    oid = order_id()
    r = await browser.get(PATH, params=window_params(oid))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    html = r.text
    assert '<html lang="ko">' in html
    assert "189,000원" in html
    assert oid in html
    # Autoescaped: the order name is text, never markup.
    assert "에어 맥스 1 &lt;한정판&gt; &amp; Co" in html
    assert "<한정판>" not in html
    assert "<script" not in html.lower()
    assert 'name="viewport"' in html
    assert '<label for="cardNumber">' in html
    assert re.search(r'<input id="cardNumber" name="cardNumber"', html)
    assert "Card number" in html
    assert "0002" in html
    assert "0009" in html

    csp = csp_of(r)
    assert csp["default-src"] == "'none'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["base-uri"] == "'none'"
    # The form posts here; its answer redirects to the store, which browsers check too.
    assert csp["form-action"].split() == ["'self'", "https://shop.example", "http://127.0.0.1:9"]
    # The one stylesheet is inline and allowed by its hash, nothing else.
    style = re.search(r"<style>(.*?)</style>", html, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert csp["style-src"] == f"'sha256-{digest}'"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"


async def test_the_form_holds_the_order_signed_and_posts_here(browser: httpx.AsyncClient) -> None:
    oid = order_id()
    form = await open_window(browser, PATH, window_params(oid))
    assert form.method == "post"
    assert form.action == str(browser.base_url.join(PATH))
    assert form.fields["orderId"] == oid
    assert form.fields["amount"] == "189000"
    assert form.fields["orderName"] == "에어 맥스 1 <한정판> & Co"
    assert form.fields["successUrl"] == STORE_OK
    assert form.fields["failUrl"] == STORE_FAIL
    assert form.fields["cardNumber"] == ""
    assert form.labels["cardNumber"].startswith("카드 번호")
    window = checkout.read_window(form.fields)
    assert form.fields["signature"] == checkout.sign(SECRET, window)


async def confirm(pg: httpx.AsyncClient, key: str, oid: str, amount: int) -> httpx.Response:
    return await pg.post(
        "/v1/payments/confirm", json={"paymentKey": key, "orderId": oid, "amount": amount}
    )


async def test_an_approving_card_redirects_to_success_url_and_confirms(
    pg: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    oid = order_id()
    form = await open_window(browser, PATH, window_params(oid, amount=159000))
    r = await submit(browser, form, card="4330 1234 1234 0000")
    params = redirected(r, STORE_OK)
    assert set(params) == {"paymentKey", "orderId", "amount"}
    assert params["orderId"] == oid
    assert params["amount"] == "159000"
    key = params["paymentKey"]
    assert PAYMENT_KEY_RE.match(key)
    # The merchant confirms with what successUrl got, as after the API authorization.
    done = await confirm(pg, key, oid, 159000)
    assert done.status_code == 200, done.text
    p = done.json()
    assert (p["paymentKey"], p["orderId"], p["status"]) == (key, oid, "DONE")
    assert p["orderName"] == "에어 맥스 1 <한정판> & Co"
    assert p["totalAmount"] == 159000
    assert p["card"]["number"].endswith("0000")
    for path in (f"/v1/payments/{key}", f"/v1/payments/orders/{oid}"):
        got = await pg.get(path)
        assert got.status_code == 200
        assert got.json() == p
    charges = (await pg.get(f"/v1/sandbox/orders/{oid}/charges")).json()
    assert (charges["charges"], charges["charged_amount"]) == (1, 159000)


async def test_the_declining_card_is_authorized_and_declines_at_confirm(
    pg: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    # As with POST /v1/sandbox/authorizations: the 0002 card is refused when the merchant
    # confirms (402 payment_declined at SnapShoe), not in the window.
    oid = order_id()
    form = await open_window(browser, PATH, window_params(oid))
    params = redirected(await submit(browser, form, card="4330-1234-1234-0002"), STORE_OK)
    r = await confirm(pg, params["paymentKey"], oid, 189000)
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "REJECT_CARD_PAYMENT"
    assert (await pg.get(f"/v1/payments/orders/{oid}")).json()["status"] == "ABORTED"


async def test_the_lost_answer_card_is_approved_behind_a_lost_confirm(
    pg: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    oid = order_id()
    form = await open_window(browser, PATH, window_params(oid, amount=1000))
    params = redirected(await submit(browser, form, card="4330123412340009"), STORE_OK)
    with pytest.raises(httpx.RemoteProtocolError):
        await confirm(pg, params["paymentKey"], oid, 1000)
    assert (await pg.get(f"/v1/payments/orders/{oid}")).json()["status"] == "DONE"


@pytest.mark.parametrize("card", ["1234", "4330abcd12340000", ""])
async def test_a_refused_card_redirects_to_fail_url_with_a_code(
    pg: httpx.AsyncClient, browser: httpx.AsyncClient, card: str
) -> None:
    oid = order_id()
    form = await open_window(browser, PATH, window_params(oid))
    params = redirected(await submit(browser, form, card=card), STORE_FAIL)
    assert params == {
        "code": "INVALID_CARD_NUMBER",
        "message": "카드번호를 다시 확인해야 합니다.",
        "orderId": oid,
    }
    assert (await pg.get(f"/v1/payments/orders/{oid}")).status_code == 404


async def test_a_paid_order_redirects_to_fail_url(
    pg: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    oid = order_id()
    form = await open_window(browser, PATH, window_params(oid))
    paid = redirected(await submit(browser, form), STORE_OK)
    assert (await confirm(pg, paid["paymentKey"], oid, 189000)).status_code == 200
    again = redirected(await submit(browser, form), STORE_FAIL)
    assert (again["code"], again["orderId"]) == ("ALREADY_PROCESSED_PAYMENT", oid)
    assert again["message"]
    assert (await pg.get(f"/v1/payments/orders/{oid}")).json()["paymentKey"] == paid["paymentKey"]


async def test_cancel_redirects_to_fail_url_and_authorizes_nothing(
    pg: httpx.AsyncClient, browser: httpx.AsyncClient
) -> None:
    oid = order_id()
    form = await open_window(browser, PATH, window_params(oid))
    params = redirected(await submit(browser, form, card="", action="cancel"), STORE_FAIL)
    assert params == {
        "code": "PAY_PROCESS_CANCELED",
        "message": "사용자에 의해 결제가 취소되었습니다.",
        "orderId": oid,
    }
    assert (await pg.get(f"/v1/payments/orders/{oid}")).status_code == 404


def assert_error_page(r: httpx.Response) -> None:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert 'role="alert"' in r.text
    assert "<form" not in r.text
    csp = csp_of(r)
    assert (csp["default-src"], csp["form-action"]) == ("'none'", "'none'")
    assert csp["frame-ancestors"] == "'none'"


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": "1000"},
        {"orderId": "ord_someone_else"},
        {"orderName": "Something cheaper"},
        {"successUrl": "https://evil.example/collect"},
        {"failUrl": "https://evil.example/collect"},
        {"signature": "0" * 64},
        {"signature": ""},
    ],
)
async def test_a_tampered_form_is_a_400_page_and_authorizes_nothing(
    pg: httpx.AsyncClient, browser: httpx.AsyncClient, changes: dict[str, str]
) -> None:
    oid = order_id()
    form = await open_window(browser, PATH, window_params(oid))
    r = await submit(browser, form, **changes)
    assert_error_page(r)
    assert "결제 정보가 변경되었습니다" in r.text
    assert (await pg.get(f"/v1/payments/orders/{oid}")).status_code == 404
    assert (await pg.get("/v1/payments/orders/ord_someone_else")).status_code == 404


async def test_a_form_without_its_fields_is_a_400_page(browser: httpx.AsyncClient) -> None:
    assert_error_page(await browser.post(PATH, data={"cardNumber": "4330123412340000"}))
    assert_error_page(await browser.post(PATH, content=b"\xff\xfe", headers={"Content-Type": ""}))
    form = await open_window(browser, PATH, window_params(order_id()))
    fields = [(k, v) for k, v in form.fields.items() if k != "cardNumber"]
    twice = [*fields, ("amount", "1000"), ("cardNumber", "4330123412340000")]
    assert_error_page(await browser.post(PATH, content=urlencode(twice)))


BAD_URLS = [
    "javascript:alert(1)",
    "JavaScript:alert(document.cookie)",
    "java\tscript:alert(1)",
    " javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "ftp://shop.example/ok",
    "//shop.example/ok",
    "/pay/success",
    "shop.example/ok",
    "https:shop.example/ok",
    "https://shop.example\\@evil.example/",
    "https://shop example/ok",
    "https://shop.example/\r\nSet-Cookie: a=b",
    "https://[::1]/ok",
    "https://shop.example:99999/ok",
    "https://상점.example/ok",
    "",
]


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("which", ["successUrl", "failUrl"])
async def test_a_url_that_is_not_absolute_http_is_a_400_page(
    browser: httpx.AsyncClient, url: str, which: str
) -> None:
    r = await browser.get(PATH, params=window_params(order_id(), **{which: url}))
    assert_error_page(r)
    assert which in r.text
    assert "javascript:" not in r.text.lower()


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,x"])
async def test_a_signed_form_with_a_javascript_url_is_still_refused(
    pg: httpx.AsyncClient, browser: httpx.AsyncClient, url: str
) -> None:
    """Even with a signature made with the secret key: the URL is checked on every post."""
    oid = order_id()
    fields = {**window_params(oid), "amount": "189000", "successUrl": url}
    signed = checkout.Window(oid, 189000, fields["orderName"], url, STORE_FAIL)
    form = Form(
        action=str(pg.base_url.join(PATH)),
        fields={**fields, "signature": checkout.sign(SECRET, signed)},
    )
    assert_error_page(await submit(browser, form))
    assert (await pg.get(f"/v1/payments/orders/{oid}")).status_code == 404


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": "0"},
        {"amount": "1.5"},
        {"amount": "-100"},
        {"amount": "+100"},
        {"amount": "1000000001"},
        {"amount": "abc"},
        {"orderId": "short"},
        {"orderId": "ord_with space"},
        {"orderName": ""},
        {"orderName": "x" * 101},
        {"orderName": "two\nlines"},
    ],
)
async def test_bad_order_parameters_are_a_400_page(
    browser: httpx.AsyncClient, changes: dict[str, str]
) -> None:
    assert_error_page(await browser.get(PATH, params={**window_params(order_id()), **changes}))


async def test_a_missing_parameter_is_a_400_page(browser: httpx.AsyncClient) -> None:
    for name in ("orderId", "amount", "orderName", "successUrl", "failUrl"):
        params = window_params(order_id())
        del params[name]
        assert_error_page(await browser.get(PATH, params=params))
