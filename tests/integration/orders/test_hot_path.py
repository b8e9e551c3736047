"""The drop's hot path: a sold-out refusal (and its replay) never touches the orders database.

The orders app runs in-process against the real products service, Redis and keys of the
platform, with its database sessions replaced by a tripwire.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from tests.integration.orders.helpers import OrdersEnv, assert_problem, key

from snapshoe.orders.bootstrap import create_app


class Tripwire:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise AssertionError("the database was used on the sold-out path")

    def begin(self, *args: Any, **kwargs: Any) -> Any:
        return self(*args, **kwargs)


async def test_sold_out_never_opens_a_db_session(orders_env: OrdersEnv) -> None:
    env = orders_env
    async with env.client() as c:
        _, items = await env.drop(c, [1])
        assert (await env.order(c, env.buyer(), [(items[0]["id"], 1)])).status_code == 201

    app = create_app(env.settings)
    async with app.router.lifespan_context(app):
        tripwire = Tripwire()
        app.state.deps.sessions = tripwire
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as direct:
            buyers = [env.buyer() for _ in range(50)]
            body = {"lines": [{"item_id": items[0]["id"], "quantity": 1}]}
            keys = [key() for _ in buyers]
            started = time.perf_counter()
            for buyer, k in zip(buyers, keys, strict=True):
                r = await direct.post(
                    "/api/orders", json=body, headers={**buyer.auth, "Idempotency-Key": k}
                )
                assert_problem(r, 409, "sold_out")
            elapsed = time.perf_counter() - started
            for buyer, k in zip(buyers[:5], keys[:5], strict=True):
                r = await direct.post(
                    "/api/orders", json=body, headers={**buyer.auth, "Idempotency-Key": k}
                )
                assert_problem(r, 409, "sold_out")
                assert r.headers["idempotent-replayed"] == "true"
    assert tripwire.calls == 0
    print(f"sold-out refusal, in-process orders -> products: {elapsed / 50 * 1000:.2f} ms each")
