"""Health and metrics as an operator reads them (issue 17):

- ``/readyz`` is what a service cannot answer without (its database, Redis): orders and
  payments built with an unreachable broker stay ready, and ``snapshoe_broker_up`` says 0.
- With several uvicorn processes per service (``SNAPSHOE_HTTP_WORKERS=2``), one scrape has
  the requests every process answered (prometheus_client's multiprocess mode, kernel.metrics).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.mmap_dict import MmapedDict
from tests.support.net import free_port
from tests.support.platform import ROOT, TEST_ENV, Platform

from snapshoe.orders.bootstrap import create_app as orders_app
from snapshoe.payments.bootstrap import create_app as payments_app

NOWHERE = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens on port 1


def sample(scrape: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in scrape.splitlines():
        if line.startswith(name + "{") and all(w in line for w in want):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize(
    ("service", "factory"), [("orders", orders_app), ("payments", payments_app)]
)
async def test_an_unreachable_broker_leaves_readiness_and_shows_in_metrics(
    platform: Platform, service: str, factory: object
) -> None:
    settings = platform.settings.model_copy(update={"amqp_url": NOWHERE})
    app: FastAPI = factory(settings)  # type: ignore[operator]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{service}") as c:
            ready = await c.get("/readyz")
            scrape = (await c.get("/metrics")).text
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}
    line = f'snapshoe_broker_up{{service="{service}"}} 0.0'
    assert line in scrape, [x for x in scrape.splitlines() if "broker_up" in x]
    # The outbox figures still come from the database.
    assert f'snapshoe_outbox_backlog_events{{service="{service}"}}' in scrape


@pytest.fixture
def two_process_users(platform: Platform, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``snapshoe serve users --workers 2`` on a port of its own, its metrics dir in tmp."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        **TEST_ENV,
        "SNAPSHOE_NAMESPACE": platform.settings.namespace,
        "SNAPSHOE_USERS_PORT": str(port),
        "SNAPSHOE_METRICS_DIR": str(tmp_path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapshoe.cli", "serve", "users", "--workers", "2"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "serve exited"
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        yield url, tmp_path / f"snapshoe-metrics-{platform.settings.namespace}" / "users"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def per_process_healthz(directory: Path) -> dict[str, float]:
    """Each process's count of /healthz requests, read from its own counter file."""
    counts: dict[str, float] = {}
    for path in directory.glob("counter_*.db"):
        n = 0.0
        for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(path)):
            if "snapshoe_http_requests_total" in key and '"/healthz"' in key:
                n += value
        counts[path.stem.removeprefix("counter_")] = n
    return counts


async def test_one_scrape_counts_the_requests_of_every_process(
    two_process_users: tuple[str, Path],
) -> None:
    url, directory = two_process_users
    n = 200

    async def scrape() -> float:
        async with httpx.AsyncClient(timeout=10) as c:
            text = (await c.get(f"{url}/metrics")).text
        return sample(text, "snapshoe_http_requests_total", route="/healthz", status="200")

    before = await scrape()

    async def one() -> int:
        # A connection each: the kernel hands new connections to either process.
        async with httpx.AsyncClient(timeout=10) as c:
            return (await c.get(f"{url}/healthz", headers={"Connection": "close"})).status_code

    for _ in range(n // 20):
        assert set(await asyncio.gather(*(one() for _ in range(20)))) == {200}
    scrapes = [await scrape() for _ in range(6)]
    assert scrapes == [before + n] * 6, (before, scrapes)
    answered = per_process_healthz(directory)
    assert len([pid for pid, k in answered.items() if k > 0]) == 2, answered
    assert sum(answered.values()) == before + n
