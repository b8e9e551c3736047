"""Every metric the alert rules and the drop dashboard use (deploy/prometheus/alerts.yml,
deploy/grafana/dashboards/drop.json) is in the running platform's ``/metrics``, once a drop
has happened: a purchase paid, a refusal, a waiting room joined (issue 17). In multiprocess
mode a labelled metric shows only once it has a sample, so the drop comes first. The gateway's
``haproxy_*`` metrics are its HAProxy exporter's, on the internal stats port."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from tests.e2e.test_purchase_flow import _pay
from tests.integration.orders.helpers import OrdersEnv
from tests.integration.orders.test_waiting_room import join, queue_drop
from tests.support.platform import Platform
from tests.support.waiting import eventually
from tests.unit.deploy.test_observability_files import used_metrics

SCRAPED = ("users", "products", "products_streams", "orders", "payments", "web", "gateway_stats")
# Counted only when the lifecycle worker moves an order (a stage of hours in a test run): its
# definition is checked offline (tests/unit/deploy/test_observability_files.py).
RARE = {"snapshoe_orders_lifecycle_transitions_total"}
FAMILY = re.compile(r"^((?:snapshoe|haproxy)_[a-z0-9_]+?)(_bucket|_count|_sum|_created)?[{ ]")


@pytest.fixture(scope="module")
async def orders_env(platform: Platform) -> AsyncIterator[OrdersEnv]:
    env = OrdersEnv(platform)
    try:
        yield env
    finally:
        await env.aclose()


async def scraped_names(platform: Platform) -> set[str]:
    names: set[str] = set()
    async with httpx.AsyncClient(timeout=15) as c:
        for service in SCRAPED:
            r = await c.get(f"{platform.url(service)}/metrics")
            assert r.status_code == 200, (service, r.text)
            for line in r.text.splitlines():
                if m := FAMILY.match(line):
                    names.add(m.group(1))
    return names


async def test_the_alerts_and_the_dashboard_use_only_metrics_a_platform_exports(
    orders_env: OrdersEnv, platform: Platform
) -> None:
    env = orders_env
    async with env.platform.client() as c:
        _, items = await env.drop(c, [1])
        first, second = env.buyer(), env.buyer()
        r = await env.order(c, first, [(items[0]["id"], 1)])
        assert r.status_code == 201, r.text
        paid = await _pay(c, first, r.json())
        assert paid.status_code == 200, paid.text
        refused = await env.order(c, second, [(items[0]["id"], 1)])
        assert refused.status_code == 409, refused.text
        product, _ = await queue_drop(env, c, 1, release_in=timedelta(minutes=5))
        assert (await join(c, product["id"], env.buyer())).status_code in (200, 201)

    wanted = used_metrics() - RARE
    assert any(name.startswith("haproxy_") for name in wanted), "the gateway is not looked at"

    async def missing() -> set[str]:
        return wanted - await scraped_names(platform)

    # Gauges read at scrape time refresh at most every few seconds.
    assert not await eventually(missing, lambda m: not m, timeout=30, interval=2)
