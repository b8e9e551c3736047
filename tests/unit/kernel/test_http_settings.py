"""create_service_app reads the Settings it is given, not the environment (issue 13, item 7),
and sets logging once."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import APIRouter

from snapshoe.kernel.http import create_service_app
from snapshoe.kernel.logs import configure_logging
from snapshoe.kernel.settings import Settings


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_access_log_comes_from_the_settings_given_not_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SNAPSHOE_ACCESS_LOG", "problems")
    router = APIRouter()

    @router.get("/ok")
    async def ok() -> dict[str, str]:
        return {"ok": "yes"}

    app = create_service_app("settingstest", routers=[router], settings=Settings(access_log="all"))
    lines = _Lines()
    logging.getLogger("snapshoe.http").addHandler(lines)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get("/ok")).status_code == 200
    finally:
        logging.getLogger("snapshoe.http").removeHandler(lines)
    assert lines.lines == ["GET /ok 200"]


def test_log_level_comes_from_the_settings_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNAPSHOE_LOG_LEVEL", "DEBUG")
    create_service_app("settingstest", routers=[], settings=Settings(log_level="ERROR"))
    assert logging.getLogger().level == logging.ERROR


def test_logging_is_configured_once_for_the_same_arguments() -> None:
    configure_logging("oncetest", "INFO", json=True)
    first = list(logging.getLogger().handlers)
    configure_logging("oncetest", "INFO", json=True)
    assert logging.getLogger().handlers == first
