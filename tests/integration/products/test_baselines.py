"""The row-lock baseline (``stock_mode = 'db_lock'``) exists only behind the benchmark switch
(``settings.bench_baselines``, on in the test platform): with it off, ``db_lock`` is refused like
any value the API does not know."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from tests.integration.products.conftest import ProductsEnv

from snapshoe.products.bootstrap import create_app


def product_body(**fields: Any) -> dict[str, Any]:
    return {
        "name": "Baseline switch",
        "brand": "TestBrand",
        "description": "made by a test",
        "price": 100_000,
        "release_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "per_user_limit": 0,
        **fields,
    }


async def test_db_lock_is_refused_when_the_bench_switch_is_off(products_env: ProductsEnv) -> None:
    env = products_env
    app = create_app(env.settings.model_copy(update={"bench_baselines": False}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://products") as c:
            refused = await c.post(
                "/api/admin/products", json=product_body(stock_mode="db_lock"), headers=env.admin
            )
            unknown = await c.post(
                "/api/admin/products", json=product_body(stock_mode="nope"), headers=env.admin
            )
            gate = await c.post("/api/admin/products", json=product_body(), headers=env.admin)
    assert unknown.status_code == refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == unknown.headers["content-type"]
    body, like = refused.json(), unknown.json()
    assert (
        (body["code"], body["detail"])
        == (like["code"], like["detail"])
        == (
            "validation_error",
            "The request is not valid",
        )
    )
    assert [(e["field"], e["type"]) for e in body["errors"]] == [
        (e["field"], e["type"]) for e in like["errors"]
    ]
    assert gate.status_code == 201, gate.text
