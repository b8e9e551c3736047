"""The account pages as a buyer uses them, in real Chromium: a wrong code in words, a password
reset through the mailed code (the old password stops working), log out; and the cart from
adding a pair to paying for it."""

from __future__ import annotations

import re

from playwright.async_api import expect

from tests.web.conftest import PASSWORD, Shop
from tests.web.test_store import APPROVE, pay_in_window

NEW_PASSWORD = "another-Stallion-pencil-4"


async def test_a_buyer_resets_the_password_logs_out_and_logs_in_with_the_new_one(
    shop: Shop,
) -> None:
    page = await shop.page()
    email = await shop.sign_up(page)
    await page.get_by_role("button", name="로그아웃").click()
    await expect(page.get_by_role("status")).to_contain_text("로그아웃했습니다")
    await expect(page.get_by_role("link", name="로그인")).to_be_visible()
    before = len(await shop.platform.messages(email))
    await page.goto("/login")
    await page.get_by_role("link", name="비밀번호를 잊으셨나요?").click()
    await page.get_by_label("이메일").fill(email)
    await page.get_by_role("button", name="재설정 코드 받기").click()
    await expect(page.get_by_role("status")).to_contain_text("재설정 코드를 보냈습니다")
    code = await shop.platform.read_code(email, after=before)
    wrong = "000000" if code != "000000" else "111111"
    await page.get_by_label("인증 코드").fill(wrong)
    await page.get_by_label("새 비밀번호").fill(NEW_PASSWORD)
    await page.get_by_role("button", name="비밀번호 바꾸기").click()
    await expect(page.locator("#form-error")).to_contain_text("재설정 코드가 맞지 않습니다")
    await page.get_by_label("인증 코드").fill(code)
    await page.get_by_label("새 비밀번호").fill(NEW_PASSWORD)
    await page.get_by_role("button", name="비밀번호 바꾸기").click()
    await page.wait_for_url("**/login")
    await shop.log_in(page, email, PASSWORD)
    await expect(page.locator("#form-error")).to_contain_text(
        "이메일 또는 비밀번호가 맞지 않습니다"
    )
    await shop.log_in(page, email, NEW_PASSWORD)
    await expect(page.get_by_role("button", name="로그아웃")).to_be_visible()


async def test_the_cart_holds_pairs_then_checks_out_and_pays(shop: Shop) -> None:
    async with shop.env.client() as client:
        product, items = await shop.env.drop(client, [4, 4], name="장바구니 러너")
    page = await shop.page()
    await shop.sign_up(page)
    for size in ("250", "255"):
        await page.goto(f"/products/{product['id']}")
        await page.get_by_label(re.compile(size)).check()
        await page.get_by_role("button", name="장바구니에 담기").click()
        await page.wait_for_url("**/cart")
    rows = page.locator("tbody tr")
    await expect(rows).to_have_count(2)
    await rows.nth(1).get_by_role("button", name="삭제").click()
    await expect(page.locator("tbody tr")).to_have_count(1)
    await expect(page.locator(".price")).to_contain_text("150,000")
    await page.get_by_role("button", name="주문하기").click()
    await pay_in_window(page, APPROVE)
    await page.wait_for_url(re.compile(r".*/orders/[^/]+$"))
    await expect(page.locator("#order-status")).to_have_attribute("data-status", "PREPARING")
    await page.goto("/cart")
    await expect(page.get_by_text("장바구니가 비어 있습니다.")).to_be_visible()
    assert (await shop.env.ledger(items[0]["id"]))["available"] + 1 == 4
