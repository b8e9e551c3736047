"""Bad input on every accounts endpoint: a 4xx problem+json with a stable code, never a 500,
through the gateway and directly."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.support.platform import Platform

VALID: dict[str, dict[str, Any]] = {
    "/api/users": {"email": "a@example.com", "password": "correct-horse-9", "name": "A"},
    "/api/users/verification": {"email": "a@example.com", "code": "123456"},
    "/api/users/verification/resend": {"email": "a@example.com"},
    "/api/auth/login": {"email": "a@example.com", "password": "whatever-123"},
    "/api/auth/refresh": {"refresh_token": "abc"},
    "/api/auth/logout": {"refresh_token": "abc"},
}

BAD_VALUES = [123, None, True, ["a@example.com"], {"x": 1}, 1.5]


def cases() -> list[tuple[str, str, dict[str, Any]]]:
    out: list[tuple[str, str, dict[str, Any]]] = []
    for path, body in VALID.items():
        out.append((path, "not_json", {"content": b"{not json", "ct": "application/json"}))
        out.append((path, "text_plain", {"content": b"email=a", "ct": "text/plain"}))
        out.append((path, "empty_body", {"content": b"", "ct": "application/json"}))
        out.append((path, "json_array", {"json": [body]}))
        out.append((path, "json_string", {"json": "hello"}))
        out.append((path, "missing_all", {"json": {}}))
        out.append((path, "huge", {"json": {**body, "pad": "x" * 200_000}}))
        out.append((path, "long_field", {"json": {k: "x" * 5000 for k in body}}))
        for field in body:
            rest = {k: v for k, v in body.items() if k != field}
            out.append((path, f"missing_{field}", {"json": rest}))
            for i, bad in enumerate(BAD_VALUES):
                out.append((path, f"{field}_type{i}", {"json": {**body, field: bad}}))
    return out


@pytest.fixture(params=["gateway", "direct"])
async def client(
    request: pytest.FixtureRequest, users_platform: Platform
) -> AsyncIterator[httpx.AsyncClient]:
    base = users_platform.gateway if request.param == "gateway" else users_platform.url("users")
    async with users_platform.client(base_url=base) as c:
        yield c


@pytest.mark.parametrize(
    ("path", "case", "req"), cases(), ids=lambda v: v if isinstance(v, str) else ""
)
async def test_bad_input(
    client: httpx.AsyncClient, path: str, case: str, req: dict[str, Any]
) -> None:
    if "json" in req:
        r = await client.post(path, json=req["json"])
    else:
        r = await client.post(path, content=req["content"], headers={"content-type": req["ct"]})
    assert 400 <= r.status_code < 500, (case, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == r.status_code
    assert isinstance(body["code"], str)
    assert body["code"]


@pytest.mark.parametrize(
    ("password", "field"),
    [
        ("short-1", "password"),
        ("aaaaaaaaaaaaaaa", "password"),
        ("x" * 129, "password"),
    ],
)
async def test_weak_password_is_422(
    users_platform: Platform, client: httpx.AsyncClient, password: str, field: str
) -> None:
    email = f"weak-{secrets.token_hex(4)}@example.com"
    r = await client.post("/api/users", json={"email": email, "password": password, "name": "W"})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_error"
    assert [e["field"] for e in r.json()["errors"]] == [f"body.{field}"]
    assert await users_platform.messages(email) == []  # nothing created, nothing mailed


@pytest.mark.parametrize("email", ["no-at-sign", "a@b", "two@@example.com", "x@localhost", ""])
async def test_bad_email_is_422(client: httpx.AsyncClient, email: str) -> None:
    for path, body in (
        ("/api/users", {"email": email, "password": "correct-horse-9", "name": "A"}),
        ("/api/users/verification", {"email": email, "code": "123456"}),
        ("/api/users/verification/resend", {"email": email}),
    ):
        r = await client.post(path, json=body)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["code"] == "validation_error"
        assert [e["field"] for e in r.json()["errors"]] == ["body.email"]


async def test_bad_code_format_is_422(client: httpx.AsyncClient) -> None:
    for code in ("12345", "1234567", "abcdef", " 123456", "１２３４５６"):
        r = await client.post(
            "/api/users/verification", json={"email": "a@example.com", "code": code}
        )
        assert r.status_code == 422, (code, r.text)
