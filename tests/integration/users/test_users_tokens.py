"""Refresh tokens: rotation, reuse detection, concurrency, logout."""

from __future__ import annotations

import asyncio

import httpx
from tests.support.platform import Platform


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/auth/refresh", json={"refresh_token": token})


def assert_invalid_token(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "invalid_token"


async def test_refresh_rotates(users_platform: Platform, gw: httpx.AsyncClient) -> None:
    user = await users_platform.verified_user(gw)
    r = await refresh(gw, user.refresh_token)
    assert r.status_code == 200, r.text
    pair = r.json()
    assert pair["token_type"] == "Bearer"
    assert pair["refresh_token"] != user.refresh_token
    assert pair["access_token"] != user.access_token
    me = await gw.get("/api/users/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 200
    assert me.json()["id"] == user.id
    # The new one rotates again.
    r = await refresh(gw, pair["refresh_token"])
    assert r.status_code == 200, r.text


async def test_reuse_of_spent_token_revokes_family(
    users_platform: Platform, gw: httpx.AsyncClient
) -> None:
    user = await users_platform.verified_user(gw)
    # A second login is another family; it must survive the first family's revocation.
    r = await gw.post("/api/auth/login", json={"email": user.email, "password": user.password})
    other_session = r.json()["refresh_token"]

    r = await refresh(gw, user.refresh_token)
    assert r.status_code == 200
    newer = r.json()["refresh_token"]

    assert_invalid_token(await refresh(gw, user.refresh_token))  # replay of the spent one
    assert_invalid_token(await refresh(gw, newer))  # the whole family is dead
    assert_invalid_token(await refresh(gw, user.refresh_token))

    r = await refresh(gw, other_session)
    assert r.status_code == 200, r.text


async def test_200_concurrent_refreshes_exactly_one_wins(
    users_platform: Platform, direct: httpx.AsyncClient
) -> None:
    """Direct to the service: the property is the service's conditional update."""
    user = await users_platform.verified_user(direct)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=users_platform.url("users"), timeout=60, limits=limits
    ) as client:
        rs = await asyncio.gather(*(refresh(client, user.refresh_token) for _ in range(200)))
    statuses = [r.status_code for r in rs]
    assert statuses.count(200) == 1, sorted(set(statuses))
    assert statuses.count(401) == 199, sorted(set(statuses))
    for r in rs:
        if r.status_code == 401:
            assert r.json()["code"] == "invalid_token"
    # The replays revoked the family: the winner's new token is dead too.
    winner = next(r for r in rs if r.status_code == 200).json()
    assert_invalid_token(await refresh(direct, winner["refresh_token"]))


async def test_logout_revokes_family(users_platform: Platform, gw: httpx.AsyncClient) -> None:
    user = await users_platform.verified_user(gw)
    r = await refresh(gw, user.refresh_token)
    newer = r.json()["refresh_token"]
    r = await gw.post("/api/auth/logout", json={"refresh_token": newer})
    assert r.status_code == 204
    assert r.content == b""
    assert_invalid_token(await refresh(gw, newer))
    # Logging out again, or with a token nobody issued, is still 204.
    r = await gw.post("/api/auth/logout", json={"refresh_token": newer})
    assert r.status_code == 204
    r = await gw.post("/api/auth/logout", json={"refresh_token": "never-issued"})
    assert r.status_code == 204


async def test_unknown_refresh_token(gw: httpx.AsyncClient) -> None:
    assert_invalid_token(await refresh(gw, "x" * 43))
