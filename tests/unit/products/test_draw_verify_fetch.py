"""``snapshoe draws verify`` reads the published draw over HTTP (aiohttp): the one public route,
the product id as one path segment, an error status raised."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import test_utils, web

from snapshoe.products.draw_verify import fetch

PUBLISHED: dict[str, Any] = {"state": "settled", "commitment": "c", "entries": [], "items": []}


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[str, list[str]]]:
    paths: list[str] = []

    async def draw(request: web.Request) -> web.Response:
        paths.append(request.raw_path)
        if request.match_info["pid"] == "missing":
            return web.json_response({"code": "not_found"}, status=404)
        return web.json_response(PUBLISHED)

    app = web.Application()
    app.router.add_get("/api/products/{pid}/draw", draw)
    async with test_utils.TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("/")), paths


async def test_fetch_reads_the_published_draw(gateway: tuple[str, list[str]]) -> None:
    base, paths = gateway
    assert await fetch(base, "prod_1") == PUBLISHED
    assert await fetch(base.rstrip("/"), "a b") == PUBLISHED
    assert paths == ["/api/products/prod_1/draw", "/api/products/a%20b/draw"]


async def test_fetch_raises_on_an_error_status(gateway: tuple[str, list[str]]) -> None:
    base, _ = gateway
    with pytest.raises(aiohttp.ClientResponseError) as info:
        await fetch(base, "missing")
    assert info.value.status == 404
