"""The operator console in real Chromium: an admin creates a drop and its sizes through the
forms, opens the live view and watches the pairs left fall (and the orders and refusals
counted) while a scripted crowd buys through the API; finds the orders and refunds one; reads
the operations panel on the console's home, each figure with the command that fixes it."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

from playwright.async_api import expect

from snapshoe.web.views import KST
from tests.integration.orders.helpers import pay
from tests.support.waiting import eventually
from tests.web.conftest import Shop


async def test_an_admin_creates_a_drop_and_watches_its_pairs_left_fall_live(shop: Shop) -> None:
    page = await shop.page()
    await shop.admin(page)
    await page.goto("/admin/products/new")
    await page.get_by_label("이름").fill("콘솔 드롭")
    await page.get_by_label("브랜드").fill("SnapTest")
    await page.get_by_label(re.compile("^가격")).fill("99000")
    await page.get_by_label("1인 구매 한도").fill("1")
    released = (datetime.now(UTC) - timedelta(minutes=1)).astimezone(KST)
    await page.get_by_label("발매 시각 (KST)").fill(released.strftime("%Y-%m-%dT%H:%M"))
    await page.get_by_role("button", name="저장").click()
    await page.wait_for_url(re.compile(r".*/admin/products/[0-9A-Z]+$"))
    pid = page.url.rsplit("/", 1)[1]
    for size in ("260", "270"):
        await page.get_by_label("사이즈 (mm)").fill(size)
        await page.get_by_label("색상", exact=True).fill("White")
        await page.get_by_label("재고", exact=True).fill("6")
        await page.get_by_role("button", name="사이즈 추가").click()
        await page.wait_for_load_state()
    await page.get_by_role("link", name="실시간 드롭 현황").first.click()
    cells = page.locator("#live-sizes .left")
    await expect(cells).to_have_count(2)
    await expect(cells.nth(0)).to_have_text("6")
    items = [await c.get_attribute("data-item") for c in await cells.all()]

    # A crowd of 30 buyers, one pair each: 12 pairs, so 18 are turned away.
    async with shop.env.client() as client:
        product = (await client.get(f"/api/products/{pid}")).json()
        assert product["per_user_limit"] == 1
        assert product["price"] == 99000

        async def one(n: int) -> int:
            buyer = shop.env.buyer()
            r = await shop.env.order(client, buyer, [(str(items[n % 2]), 1)])
            return r.status_code

        codes = await asyncio.gather(*(one(n) for n in range(30)))
    assert sorted(codes).count(201) == 12
    await expect(cells.nth(0)).to_have_text("0", timeout=15_000)
    await expect(cells.nth(1)).to_have_text("0", timeout=15_000)
    await expect(page.locator("#live-sold")).to_have_text("12", timeout=15_000)
    await expect(page.locator("#live-status")).to_have_text("품절")
    points = await page.locator("#live-chart polyline").count()
    assert points == 2
    # The sales figures: 12 orders, the 18 others turned away as sold out, nothing else.
    await expect(page.locator("#live-orders")).to_have_text("12", timeout=15_000)
    await expect(page.locator("#live-refused-sold_out")).to_have_text("18", timeout=15_000)
    await expect(page.locator("#live-refused-purchase_limit_exceeded")).to_have_text("0")
    await expect(page.locator("#live-approved")).to_have_text("0")
    await expect(page.locator("#live-declined")).to_have_text("0")
    await expect(page.locator("#live-5xx")).to_have_text("0")
    rate = await page.locator("#live-orders-rate").text_content()
    assert rate is not None
    assert float(rate) >= 0

    # Restock one size by 3 from the product page: the shop shows 3 again.
    await page.goto(f"/admin/products/{pid}")
    await page.get_by_label(re.compile("재고 증감.*260")).fill("3")
    await page.get_by_role("button", name="재고 반영").first.click()
    await page.wait_for_load_state()
    async with shop.env.client() as client:
        fresh = (await client.get(f"/api/products/{pid}")).json()
    left = {i["size"]: i["stock_remaining"] for i in fresh["items"]}
    assert left == {260: 3, 270: 0}


async def test_the_console_is_for_admins_only_and_refunds_a_paid_order(shop: Shop) -> None:
    anonymous = await shop.page()
    landing = await anonymous.goto("/admin")
    assert landing is not None
    await anonymous.wait_for_url("**/login")  # sign in first
    page = await shop.page()
    await shop.admin(page)
    async with shop.env.client() as client:
        product, items = await shop.env.drop(client, [2], name="환불 테스트")
        buyer = shop.env.buyer()
        r = await shop.env.order(client, buyer, [(items[0]["id"], 1)])
        assert r.status_code == 201, r.text
        order = r.json()
        await pay(client, buyer.auth, order)
        await eventually(
            lambda: client.get(f"/api/orders/{order['id']}", headers=buyer.auth),
            lambda r: r.json()["status"] == "PREPARING",
        )
    await page.goto(f"/admin/orders?status=PREPARING&product_id={product['id']}")
    await expect(page.locator(".order-row")).to_have_count(1)
    await page.locator(".order-row a").first.click()
    await expect(page.locator("#order-status")).to_have_attribute("data-status", "PREPARING")
    await expect(page.locator("#order-payment")).not_to_have_text("–")
    await page.get_by_role("button", name="환불").click()
    await expect(page.locator("#order-status")).to_have_attribute("data-status", "CANCELLED")
    await expect(page.get_by_role("status")).to_contain_text("환불")
    async with shop.env.client() as client:
        r = await client.get(f"/api/orders/{order['id']}", headers=buyer.auth)
    assert r.json()["status"] == "CANCELLED"
    assert (await shop.env.ledger(items[0]["id"]))["available"] == 2


async def test_the_console_home_shows_the_operations_panel_with_each_fix(shop: Shop) -> None:
    page = await shop.page()
    await shop.admin(page)
    await page.goto("/admin")
    panel = page.locator("#operations")
    await expect(panel.locator("caption")).to_have_text("운영 현황")
    for service in ("orders", "products", "payments"):
        row = panel.locator(f"#ops-outbox-{service}")
        await expect(row.locator("th")).to_contain_text("아웃박스 적체")
        await expect(row.locator(".value")).to_have_text(re.compile(r"^\d+"))
        await expect(row.locator("code.fix")).to_have_text(f"snapshoe worker {service}")
    dead = panel.locator("#ops-dead-letters")
    await expect(dead.locator(".value")).to_have_text(re.compile(r"^\d+$"))
    await expect(dead.locator("code.look")).to_have_text("snapshoe events dlq list")
    await expect(dead.locator("code.fix")).to_have_text("snapshoe events dlq replay --all")
    drift = panel.locator("#ops-gate-drift")
    await expect(drift.locator(".value")).to_have_text(re.compile(r"^\d+$"))
    await expect(drift.locator("code.fix")).to_have_text("snapshoe products reconcile")
    # In English too.
    await page.goto("/lang/en?next=/admin")
    await page.wait_for_url("**/admin")
    await expect(panel.locator("caption")).to_have_text("Operations at a glance")
