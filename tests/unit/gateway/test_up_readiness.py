"""`snapshoe up`'s readiness probe on aiohttp (the project's one HTTP client): a service is
ready when its /readyz answers 200, the gateway (any of its processes) when it routes to
products without a 5xx, a process that does not answer is not ready. These replace the two
httpx MockTransport tests of test_gateway_capacity_render.py."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import pytest
from tests.support.settings import PlatformSettings

from snapshoe.cli import _readiness
from snapshoe.kernel.settings import Settings
from snapshoe.supervisor import ProcessSpec


class _Answer:
    def __init__(self, status: int) -> None:
        self.status = status

    async def __aenter__(self) -> _Answer:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class FakeSession:
    """What ``_readiness`` uses of an ``aiohttp.ClientSession``: ``get(url)`` as a context."""

    def __init__(self, statuses: list[int | Exception]) -> None:
        self.statuses = statuses
        self.asked: list[str] = []

    def get(self, url: str, **_: Any) -> _Answer:
        self.asked.append(url)
        status = self.statuses.pop(0)
        if isinstance(status, Exception):
            raise status
        return _Answer(status)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return PlatformSettings(data_dir=tmp_path / "data", products_streams_port=18506)


@pytest.mark.parametrize("name", ["gateway", "gateway-2", "gateway-8"])
async def test_every_gateway_process_is_ready_when_the_gateway_routes(
    settings: Settings, name: str
) -> None:
    session = FakeSession([503, 200])
    ready = _readiness(settings, session)
    spec = ProcessSpec(name, ["haproxy"])
    assert [await ready(spec), await ready(spec)] == [False, True]
    assert session.asked == [f"{settings.gateway_url}/api/products?limit=1"] * 2


async def test_the_stream_processes_are_ready_when_their_readyz_answers(
    settings: Settings,
) -> None:
    session = FakeSession([200])
    assert await _readiness(settings, session)(ProcessSpec("products_streams", ["x"]))
    assert session.asked == [f"{settings.service_url('products_streams')}/readyz"]


async def test_a_service_that_does_not_answer_is_not_ready(settings: Settings) -> None:
    refused = aiohttp.ClientConnectionError("refused")
    session = FakeSession([refused, TimeoutError(), 500])
    ready = _readiness(settings, session)
    spec = ProcessSpec("orders", ["x"])
    assert [await ready(spec), await ready(spec), await ready(spec)] == [False, False, False]
    # A worker has no endpoint: ready once started, nothing asked.
    assert await ready(ProcessSpec("orders-worker", ["x"]))
    assert len(session.asked) == 3


async def test_up_probes_through_a_real_aiohttp_session(settings: Settings) -> None:
    """Nothing listens on the port: a real ClientSession's refusal is "not ready"."""
    s = settings.model_copy(update={"users_port": 1})
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        assert not await _readiness(s, session)(ProcessSpec("users", ["x"]))
