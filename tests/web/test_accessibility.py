"""axe-core (4.x, in the page, through axe-playwright-python which ships it) over the main
pages of the store and the console: no serious or critical violation."""

from __future__ import annotations

import re
from typing import Any

from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page

from tests.web.conftest import Shop

BLOCKING = ("serious", "critical")


async def violations(page: Page) -> list[dict[str, Any]]:
    results = await Axe().run(page)
    found: list[dict[str, Any]] = results.response["violations"]
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
        for v in found
        if v["impact"] in BLOCKING
    ]


async def test_the_main_pages_have_no_serious_accessibility_violations(shop: Shop) -> None:
    async with shop.env.client() as client:
        product, _ = await shop.env.drop(client, [2, 1], name="접근성 러너")
    # axe is injected by evaluate; the pages' own CSP would refuse an injected script.
    page = await shop.page(bypass_csp=True)
    found: dict[str, list[dict[str, Any]]] = {}
    for path in ("/", "/login", "/signup", "/password-reset"):
        await page.goto(path)
        found[path] = await violations(page)
    await shop.sign_up(page)
    await page.goto(f"/products/{product['id']}")
    found["product"] = await violations(page)
    await page.get_by_label(re.compile("250")).check()
    await page.get_by_role("button", name="구매하기").click()
    await page.wait_for_load_state()
    await page.goto("/orders")
    found["/orders"] = await violations(page)
    await page.locator(".order-row a").first.click()
    found["order"] = await violations(page)
    for lang_path in ("/lang/en?next=/",):
        await page.goto(lang_path)
        found["/ (en)"] = await violations(page)
    admin = await shop.page(bypass_csp=True)
    await shop.admin(admin)
    for path in (
        "/admin",
        "/admin/products/new",
        f"/admin/products/{product['id']}",
        f"/admin/products/{product['id']}/live",
        "/admin/orders",
    ):
        await admin.goto(path)
        found[path] = await violations(admin)
    assert {k: v for k, v in found.items() if v} == {}
    assert len(found) >= 12
