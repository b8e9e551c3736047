"""Screenshots of the store and the console for the README (docs/screenshots/), taken in real
headless Chromium against a running dev platform (`snapshoe up`, with its demo data):

    uv run python scripts/screenshots.py [--gateway http://127.0.0.1:8000]

It signs up a buyer through the store (the code from the mail sink), buys a pair and pays in the
sandbox PG's window, and makes an admin (snapshoe users create-admin) for the console pages.
Korean text needs a Korean font in the machine's Chromium: `apt-get install fonts-nanum`."""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
from pathlib import Path

import httpx
from playwright.async_api import Page, async_playwright

from snapshoe.kernel.settings import get_settings
from snapshoe.users.handlers import create_admin

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PASSWORD = "screenshot-Horse-battery-9"  # noqa: S105 (a throwaway dev account)
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def code_for(mail_url: str, email: str) -> str:
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(100):
            msgs = (await client.get(f"{mail_url}/api/messages", params={"to": email})).json()
            for m in msgs:
                if found := re.search(r"\b(\d{6})\b", m["body"]):
                    return found.group(1)
            await asyncio.sleep(0.1)
    raise SystemExit(f"no code mailed to {email}")


async def shot(page: Page, name: str) -> None:
    await page.wait_for_timeout(600)  # countdowns and live figures have ticked once
    await page.screenshot(path=OUT / f"{name}.png", full_page=True)
    print("saved", OUT / f"{name}.png")


async def buyer_pages(page: Page, mail_url: str) -> str:
    email = f"screenshot-{secrets.token_hex(4)}@example.com"
    await page.goto("/")
    await shot(page, "store-catalog")
    await page.goto("/signup")
    await page.get_by_label("이메일").fill(email)
    await page.get_by_label("이름").fill("김스냅")
    await page.get_by_label("비밀번호").fill(PASSWORD)
    await page.get_by_role("button", name="회원가입").click()
    await page.get_by_label("인증 코드").fill(await code_for(mail_url, email))
    await page.get_by_role("button", name="인증하기").click()
    await page.get_by_label("이메일").fill(email)
    await page.get_by_label("비밀번호").fill(PASSWORD)
    await page.get_by_role("button", name="로그인").click()
    await page.goto("/?status=live")
    await page.locator(".card a").first.click()
    product_path = page.url.split("://", 1)[1].split("/", 1)[1]
    await shot(page, "store-product")
    await page.locator("input[type=radio]:not([disabled])").first.check()
    await page.get_by_role("button", name="구매하기").click()
    await page.wait_for_url(re.compile(r".*/pg/v1/sandbox/checkout.*"))
    await shot(page, "pg-window")
    await page.get_by_label(re.compile("카드 번호")).fill("4111111111110000")
    await page.get_by_role("button", name=re.compile("결제")).click()
    await page.wait_for_url(re.compile(r".*/orders/[^/]+$"))
    await shot(page, "store-order")
    return "/" + product_path


async def console_pages(page: Page, product_path: str) -> None:
    email = f"admin-{secrets.token_hex(4)}@example.com"
    await create_admin(get_settings(), email, PASSWORD)
    await page.goto("/login")
    await page.get_by_label("이메일").fill(email)
    await page.get_by_label("비밀번호").fill(PASSWORD)
    await page.get_by_role("button", name="로그인").click()
    await page.goto("/admin")
    await shot(page, "console-home")
    await page.goto(f"/admin{product_path}/live")
    await page.wait_for_timeout(3000)
    await shot(page, "console-live")
    await page.goto("/admin/orders")
    await shot(page, "console-orders")


async def main(gateway: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    mail_url = get_settings().service_url("mail_sink")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        desktop = await browser.new_context(
            base_url=gateway, viewport={"width": 1280, "height": 800}
        )
        product_path = await buyer_pages(await desktop.new_page(), mail_url)
        phone = await browser.new_context(
            base_url=gateway,
            viewport={"width": 390, "height": 844},
            is_mobile=True,
            device_scale_factor=2,
        )
        page = await phone.new_page()
        await page.goto("/?status=live")
        await page.locator(".card a").first.click()
        await shot(page, "store-product-phone")
        admin = await browser.new_context(base_url=gateway, viewport={"width": 1280, "height": 800})
        await console_pages(await admin.new_page(), product_path)
        await browser.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gateway", default=get_settings().gateway_url)
    asyncio.run(main(parser.parse_args().gateway))
