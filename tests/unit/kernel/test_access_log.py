"""The services' per-request log (kernel.http.RequestContextMiddleware): by default only 5xx
answers and slow requests; every request with SNAPSHOE_ACCESS_LOG=all. Metrics count all."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from fastapi import APIRouter
from prometheus_client import REGISTRY

from snapshoe.kernel import http as kernel_http
from snapshoe.kernel.errors import Problem
from snapshoe.kernel.http import create_service_app


def _client(service: str) -> httpx.AsyncClient:
    router = APIRouter()

    @router.get("/ok")
    async def ok() -> dict[str, str]:
        return {"ok": "yes"}

    @router.get("/busy")
    async def busy() -> None:
        raise Problem(503, "service_unavailable", detail="down")

    @router.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(0.06)
        return {"ok": "late"}

    app = create_service_app(service, routers=[router])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


class _Lines(logging.Handler):
    """Records of the services' request log (configure_logging replaces the root handlers,
    so pytest's caplog would not see them)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.getMessage(), record.levelno))

    def __enter__(self) -> _Lines:
        logging.getLogger("snapshoe.http").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("snapshoe.http").removeHandler(self)


async def test_by_default_only_problems_and_slow_requests_are_logged_but_all_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SNAPSHOE_ACCESS_LOG", raising=False)
    monkeypatch.setattr(kernel_http, "SLOW_REQUEST_SECONDS", 0.05)
    async with _client("logtest1") as c:
        with _Lines() as log:
            for _ in range(3):
                assert (await c.get("/ok")).status_code == 200
            assert (await c.get("/busy")).status_code == 503
            assert (await c.get("/slow")).status_code == 200
    assert log.lines == [
        ("GET /busy 503", logging.WARNING),
        ("GET /slow 200", logging.WARNING),
    ]
    counted = REGISTRY.get_sample_value(
        "snapshoe_http_requests_total",
        {"service": "logtest1", "method": "GET", "route": "/ok", "status": "200"},
    )
    assert counted == 3


async def test_access_log_all_logs_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPSHOE_ACCESS_LOG", "all")
    async with _client("logtest2") as c:
        with _Lines() as log:
            assert (await c.get("/ok")).status_code == 200
            assert (await c.get("/busy")).status_code == 503
    assert log.lines == [("GET /ok 200", logging.INFO), ("GET /busy 503", logging.WARNING)]
