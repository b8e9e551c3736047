"""The benchmark's floor route (orders.baseline) is mounted only behind the explicit switch
``settings.bench_baselines``: off, ``/api/orders/-/floor`` is unknown to the orders app (404,
as any order it does not have); on, an authenticated buyer gets 200. In-process orders app."""

from __future__ import annotations

import httpx
from tests.integration.orders.helpers import OrdersEnv

from snapshoe.orders.bootstrap import create_app


async def _floor(env: OrdersEnv, *, bench_baselines: bool) -> httpx.Response:
    settings = env.settings.model_copy(update={"bench_baselines": bench_baselines})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as direct:
            return await direct.get("/api/orders/-/floor", headers=env.buyer().auth)


async def test_floor_route_is_unknown_with_the_switch_off(orders_env: OrdersEnv) -> None:
    assert (await _floor(orders_env, bench_baselines=False)).status_code == 404


async def test_floor_route_answers_a_buyer_with_the_switch_on(orders_env: OrdersEnv) -> None:
    buyer = orders_env.buyer()
    settings = orders_env.settings.model_copy(update={"bench_baselines": True})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as direct:
            answer = await direct.get("/api/orders/-/floor", headers=buyer.auth)
            anonymous = await direct.get("/api/orders/-/floor")
    assert answer.status_code == 200
    assert answer.json() == {"user_id": buyer.id}
    assert anonymous.status_code == 401
