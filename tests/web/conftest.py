"""Fixtures of the store and console tests: a real headless Chromium (Debian's, driven by
Playwright: browser downloads do not work here) against the session's real platform, through
its gateway. Each test gets a fresh browser context (no cookies carried over)."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from snapshoe.users.handlers import create_admin
from tests.integration.orders.helpers import OrdersEnv
from tests.support.platform import Platform

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google's hosts, which this
# machine's closed network refuses (the env notes).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct-Horse-battery-9"


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture(scope="module")
async def orders_env(platform: Platform) -> AsyncIterator[OrdersEnv]:
    env = OrdersEnv(platform)
    try:
        yield env
    finally:
        await env.aclose()


@dataclass
class Shop:
    platform: Platform
    env: OrdersEnv
    browser: Browser

    @property
    def url(self) -> str:
        return self.platform.gateway

    async def context(self, **kw: Any) -> BrowserContext:
        ctx = await self.browser.new_context(base_url=self.url, locale="ko-KR", **kw)
        ctx.set_default_timeout(15_000)
        return ctx

    async def page(self, **kw: Any) -> Page:
        return await (await self.context(**kw)).new_page()

    async def sign_up(self, page: Page) -> str:
        """A new buyer through the store's own pages: sign up, the mailed code, log in."""
        email = f"web-{secrets.token_hex(5)}@example.com"
        await page.goto("/signup")
        await page.get_by_label("이메일").fill(email)
        await page.get_by_label("이름").fill("웹 구매자")
        await page.get_by_label("비밀번호").fill(PASSWORD)
        await page.get_by_role("button", name="회원가입").click()
        await page.wait_for_url("**/verify?**")
        code = await self.platform.read_code(email)
        await page.get_by_label("인증 코드").fill(code)
        await page.get_by_role("button", name="인증하기").click()
        await page.wait_for_url("**/login")
        await self.signed_in(page, email)
        return email

    async def log_in(self, page: Page, email: str, password: str = PASSWORD) -> None:
        await page.goto("/login")
        await page.get_by_label("이메일").fill(email)
        await page.get_by_label("비밀번호").fill(password)
        await page.get_by_role("button", name="로그인").click()
        await page.wait_for_load_state()

    async def signed_in(self, page: Page, email: str, password: str = PASSWORD) -> None:
        """log_in, and fail here (not pages later) if the store did not sign the buyer in."""
        await self.log_in(page, email, password)
        await expect(page.get_by_role("button", name="로그아웃")).to_be_visible()

    async def admin(self, page: Page) -> str:
        email = f"admin-{secrets.token_hex(5)}@example.com"
        await create_admin(self.platform.settings, email, PASSWORD)
        await self.signed_in(page, email)
        return email


@pytest.fixture
async def shop(platform: Platform, orders_env: OrdersEnv, browser: Browser) -> Shop:
    return Shop(platform, orders_env, browser)
