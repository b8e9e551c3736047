"""The store as a buyer uses it, in real headless Chromium against the real platform: sign up to
order history, paying through the PG's payment window; errors in words; a phone-sized screen;
the browser-side security (cookies, CSRF, CSP, no token where a script could read it)."""

from __future__ import annotations

import re

import httpx
from playwright.async_api import Page, expect

from tests.web.conftest import PASSWORD, Shop

APPROVE = "4111111111110000"
DECLINE = "4111111111110002"


async def pay_in_window(page: Page, card: str) -> None:
    """The PG's own page (the sandbox's payment window): the card, then pay."""
    await page.wait_for_url(re.compile(r".*/pg/v1/sandbox/checkout.*"))
    await page.get_by_label(re.compile("카드 번호")).fill(card)
    await page.get_by_role("button", name=re.compile("결제")).click()


async def test_a_buyer_signs_up_buys_pays_and_sees_the_order_in_history(shop: Shop) -> None:
    async with shop.env.client() as client:
        product, items = await shop.env.drop(client, [3, 2], name="웹 러너 270")
    page = await shop.page()
    await shop.sign_up(page)
    await page.goto("/")
    await page.get_by_label("상품명 또는 브랜드").fill("웹 러너")
    await page.get_by_role("button", name="검색").click()
    await page.get_by_role("link", name="웹 러너 270").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("웹 러너 270")
    left = page.locator(f'.left[data-item="{items[0]["id"]}"]')
    await expect(left).to_have_text("3")
    await page.get_by_label(re.compile("250")).check()
    await page.get_by_role("button", name="구매하기").click()
    await pay_in_window(page, APPROVE)
    await page.wait_for_url(re.compile(r".*/orders/[^/]+$"))
    await expect(page.get_by_role("status")).to_contain_text("결제가 완료되었습니다")
    await expect(page.locator("#order-status")).to_have_attribute("data-status", "PREPARING")
    await expect(page.locator('.timeline li[data-step="PREPARING"]')).to_have_class(
        re.compile("done")
    )
    order_url = page.url
    await page.get_by_role("link", name="주문 내역").first.click()
    rows = page.locator(".order-row")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("준비중")
    # The pair is gone from the shelf (the product page's live figure follows the ledger).
    await page.goto(f"/products/{product['id']}")
    await expect(left).to_have_text("2", timeout=10_000)
    # Cancel the paid order: refunded, and the timeline says so.
    await page.goto(order_url)
    await page.get_by_role("button", name="주문 취소").click()
    await expect(page.locator("#order-status")).to_have_attribute("data-status", "CANCELLED")
    await expect(page.get_by_role("status")).to_contain_text("주문을 취소했습니다")


async def test_a_refusal_is_shown_in_words_and_a_declined_card_puts_the_pair_back(
    shop: Shop,
) -> None:
    async with shop.env.client() as client:
        product, items = await shop.env.drop(client, [1], name="웹 한정 1켤레")
        page = await shop.page()
        email = await shop.sign_up(page)
        await page.goto(f"/products/{product['id']}")
        await page.get_by_label(re.compile("250")).check()
        await page.get_by_role("button", name="구매하기").click()
        await pay_in_window(page, DECLINE)
        await page.wait_for_url(re.compile(r".*/orders/[^/]+$"))
        await expect(page.get_by_role("status")).to_contain_text("카드 결제가 거절되었습니다")
        await expect(page.locator("#order-status")).to_have_attribute(
            "data-status", "PAYMENT_FAILED"
        )
        # Someone else takes the last pair; this buyer's page is a moment old and asks anyway.
        await page.goto(f"/products/{product['id']}")
        other = shop.env.buyer()
        r = await shop.env.order(client, other, [(items[0]["id"], 1)])
        assert r.status_code == 201, r.text
        await page.evaluate(
            "document.querySelectorAll('input[type=radio]').forEach(r => r.disabled = false)"
        )
        await page.get_by_label(re.compile("250")).check()
        await page.get_by_role("button", name="구매하기").click()
        await expect(page.get_by_role("status")).to_contain_text("품절되었습니다")
        shown = await page.locator("body").inner_text()  # what the buyer reads
        assert "409" not in shown
        assert "sold_out" not in shown
        # In English, the same refusal in English words.
        await page.get_by_role("link", name="English").click()
        await page.evaluate(
            "document.querySelectorAll('input[type=radio]').forEach(r => r.disabled = false)"
        )
        await page.get_by_label(re.compile("250")).check()
        await page.get_by_role("button", name="Buy").click()
        await expect(page.get_by_role("status")).to_contain_text("Sold out.")
        # The account follows the switch, so the shop's mails come in English too.
        me = await shop.platform.login(email, PASSWORD, client)
        profile = await client.get("/api/users/me", headers=me.auth)
        assert profile.json()["lang"] == "en"


async def test_on_a_phone_sized_screen_the_pages_fit_and_the_buy_button_is_reachable(
    shop: Shop,
) -> None:
    async with shop.env.client() as client:
        product, _ = await shop.env.drop(client, [2], name="모바일 러너")
    page = await shop.page(viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True)
    await shop.sign_up(page)
    for path in ("/", f"/products/{product['id']}", "/orders", "/login"):
        await page.goto(path)
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, (path, overflow)
    await page.goto(f"/products/{product['id']}")
    button = page.get_by_role("button", name="구매하기")
    await button.scroll_into_view_if_needed()
    box = await button.bounding_box()
    assert box is not None
    assert box["height"] >= 44
    assert box["x"] + box["width"] <= 375
    # Keyboard only: the skip link first, then the size and the button by Tab.
    await page.goto("/")
    await page.keyboard.press("Tab")
    focused = await page.evaluate("document.activeElement.textContent")
    assert "본문으로 건너뛰기" in focused


async def test_tokens_stay_out_of_scripts_reach_and_forms_need_their_csrf_token(
    shop: Shop,
) -> None:
    page = await shop.page()
    await shop.sign_up(page)
    response = await page.goto("/")
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp
    cookies = await page.context.cookies()
    session = next(c for c in cookies if c["name"] == "snapshoe_session")
    assert session["httpOnly"]
    assert session["sameSite"] == "Lax"
    assert await page.evaluate("document.cookie") == ""
    assert await page.evaluate("window.localStorage.length + window.sessionStorage.length") == 0
    html = await page.content()
    # No JWT anywhere in the page (three base64url parts, a JSON header first).
    assert re.search(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+", html) is None
    assert "refresh_token" not in html
    # A form posted from elsewhere (no CSRF token, or another site's origin) is refused.
    jar = {c["name"]: c["value"] for c in cookies}
    async with httpx.AsyncClient(base_url=shop.url, cookies=jar) as client:
        r = await client.post("/logout", data={})
        assert r.status_code == 403
        csrf = await page.locator('input[name="csrf_token"]').first.get_attribute("value")
        r = await client.post(
            "/logout", data={"csrf_token": csrf}, headers={"Origin": "https://evil.example"}
        )
        assert r.status_code == 403
    # Still signed in: neither forged request did anything.
    await page.goto("/orders")
    await expect(page.get_by_role("heading", level=1)).to_have_text("주문 내역")
    # An unknown page is the store's page in words, not an API problem.
    missing = await page.goto("/no-such-page")
    assert missing is not None
    assert missing.status == 404
    await expect(page.locator("p.error")).to_have_text("찾을 수 없습니다.")
    # A buyer is no admin: the console says so, server-side.
    denied = await page.goto("/admin")
    assert denied is not None
    assert denied.status == 403
