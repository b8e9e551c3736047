"""problem+json rendering of the kernel's error handlers (pure: an in-process app, no I/O)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from snapshoe.kernel.errors import Problem
from snapshoe.kernel.http import MAX_BODY_BYTES, create_service_app


class Body(BaseModel):
    n: int


def _app() -> httpx.AsyncClient:
    router = APIRouter()

    @router.post("/echo")
    async def echo(body: Body) -> dict[str, int]:
        return {"n": body.n}

    @router.get("/problem")
    async def problem() -> None:
        raise Problem(409, "sold_out", detail="gone", item_ids=["a"])

    @router.get("/db-down")
    async def db_down() -> None:
        raise OperationalError("SELECT 1", {}, Exception("Can't connect"))

    @router.get("/pool-full")
    async def pool_full() -> None:
        raise PoolTimeout("QueuePool limit of size 10 overflow 20 reached")

    @router.get("/redis-down")
    async def redis_down() -> None:
        raise RedisConnectionError("refused")

    @router.get("/bug")
    async def bug() -> None:
        raise ValueError("oops")

    app = create_service_app("test", routers=[router])
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t"
    )


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("GET", "/problem", {}, 409, "sold_out"),
        ("GET", "/db-down", {}, 503, "service_unavailable"),
        ("GET", "/redis-down", {}, 503, "service_unavailable"),
        ("GET", "/bug", {}, 500, "internal_error"),
        ("GET", "/nowhere", {}, 404, "not_found"),
        ("DELETE", "/echo", {}, 405, "method_not_allowed"),
        ("POST", "/echo", {"content": b"{not json"}, 400, "invalid_json"),
        ("POST", "/echo", {"json": {"n": "x"}}, 422, "validation_error"),
        ("POST", "/echo", {"json": {}}, 422, "validation_error"),
        ("POST", "/echo", {"content": b"1" * (MAX_BODY_BYTES + 1)}, 413, "payload_too_large"),
    ],
)
async def test_errors_are_problem_json(
    method: str, path: str, kwargs: dict[str, object], status: int, code: str
) -> None:
    async with _app() as client:
        headers = {"content-type": "application/json"}
        r = await client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == code
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    assert r.headers["x-request-id"]


async def test_backend_outage_says_when_to_retry() -> None:
    async with _app() as client:
        r = await client.get("/db-down")
    assert r.headers["retry-after"] == "1"
    assert "Can't connect" not in r.text  # no internals leak


async def test_a_full_connection_pool_is_a_503_to_retry_not_a_500() -> None:
    # Every connection of the process busy for the pool's whole timeout: an overload, not a
    # bug (seen at a full-size bench queue's release).
    async with _app() as client:
        r = await client.get("/pool-full")
    assert r.status_code == 503
    assert r.json()["code"] == "service_unavailable"
    assert r.headers["retry-after"] == "1"
    assert "QueuePool" not in r.text


async def test_problem_extra_fields_reach_the_client() -> None:
    async with _app() as client:
        r = await client.get("/problem")
    assert r.json()["item_ids"] == ["a"]
