"""The real HAProxy gateway, from the rendered config: JWT at the edge, routing, identity
headers, request ids, rate limits, body limit, health and metrics."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import httpx
import pytest
from tests.integration.gateway.conftest import LOGIN_RATE, VERIFICATION_RATE, Gateway, fresh_address
from tests.support.tokens import ATTACK_NAMES, bearer, token_attacks, valid_token

from snapshoe.kernel.internal import CLIENT_IP_HEADER, EDGE_HEADER, web_edge_token

PROTECTED = [
    ("GET", "/api/users/me"),
    ("GET", "/api/users/%6De"),  # percent-encoded "me": fail closed, not public
    ("GET", "/api/cart"),
    ("PUT", "/api/cart/lines/item-1"),
    ("POST", "/api/orders"),
    ("GET", "/api/orders/o-1"),
    ("POST", "/api/payments/confirm"),
    ("GET", "/api/payments/p-1"),
    ("POST", "/api/admin/products"),
    ("PATCH", "/api/admin/items/i-1"),
]

PUBLIC = [
    ("POST", "/api/users", "/api/users"),
    ("POST", "/api/users/verification", "/api/users/verification"),
    ("POST", "/api/users/verification/resend", "/api/users/verification/resend"),
    ("POST", "/api/auth/login", "/api/auth/login"),
    ("POST", "/api/auth/refresh", "/api/auth/refresh"),
    ("GET", "/api/auth/jwks", "/api/auth/jwks"),
    ("GET", "/api/products", "/api/products"),
    ("GET", "/api/products/p-1", "/api/products/p-1"),
    ("POST", "/api/payments/webhooks/pg", "/api/payments/webhooks/pg"),
    ("POST", "/pg/v1/sandbox/authorizations", "/v1/sandbox/authorizations"),  # /pg stripped
]


def headers_of(r: httpx.Response) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for k, v in r.json()["headers"]:
        seen.setdefault(k.lower(), []).append(v)
    return seen


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].startswith("https://")
    assert body["title"]
    assert body["detail"]
    return body


async def test_valid_token_reaches_the_service_with_its_authorization(gateway: Gateway) -> None:
    token = gateway.token()
    async with gateway.client() as client:
        r = await client.get("/api/users/me", headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "/api/users/me"
    # Services verify the token themselves too: the header is passed on untouched.
    assert headers_of(r)["authorization"] == [f"Bearer {token}"]


@pytest.mark.parametrize("attack", ATTACK_NAMES)
async def test_token_attack_is_refused_at_the_edge(gateway: Gateway, attack: str) -> None:
    token = dict(token_attacks(gateway.private_key, gateway.settings))[attack]
    async with gateway.client() as client:
        r = await client.get("/api/users/me", headers=bearer(token))
    assert_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "path" not in r.json()  # the upstream never saw it


async def test_two_authorization_headers_are_refused(gateway: Gateway) -> None:
    forged = dict(token_attacks(gateway.private_key, gateway.settings))["tampered_payload"]
    async with gateway.client() as client:
        r = await client.get(
            "/api/users/me",
            headers=[
                ("Authorization", f"Bearer {gateway.token()}"),
                ("Authorization", f"Bearer {forged}"),
            ],
        )
    assert_problem(r, 400, "bad_request")


async def test_the_control_token_of_the_attack_builder_passes(gateway: Gateway) -> None:
    async with gateway.client() as client:
        r = await client.get(
            "/api/orders", headers=bearer(valid_token(gateway.private_key, gateway.settings))
        )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_protected_routes_need_a_token(gateway: Gateway, method: str, path: str) -> None:
    async with gateway.client() as client:
        r = await client.request(method, path)
        assert_problem(r, 401, "unauthorized")
        ok = await client.request(method, path, headers=bearer(gateway.token()))
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(("method", "path", "upstream_path"), PUBLIC)
async def test_public_routes_reach_their_service(
    gateway: Gateway, method: str, path: str, upstream_path: str
) -> None:
    async with gateway.client() as client:
        r = await client.request(method, path, json={})
    assert r.status_code == 200, r.text
    assert r.json()["path"] == upstream_path


@pytest.mark.parametrize(
    "path", ["/api", "/api/usersx", "/pg", "/healthz", "/metrics", "/internal/x", "/openapi.json"]
)
async def test_unknown_routes_are_a_gateway_404(gateway: Gateway, path: str) -> None:
    async with gateway.client() as client:
        r = await client.get(path)
    assert_problem(r, 404, "not_found")


@pytest.mark.parametrize("path", ["/", "/admin", "/products/p-1", "/static/app.js", "/API/x"])
async def test_paths_outside_the_api_go_to_the_store_unchanged(gateway: Gateway, path: str) -> None:
    async with gateway.client() as client:
        r = await client.get(path)
    assert r.status_code == 200, r.text
    assert r.json()["path"] == path


async def test_the_web_tiers_named_buyer_address_counts_only_with_its_edge_token(
    gateway: Gateway,
) -> None:
    """The store calls the API for many buyers from one address: with the edge token the
    gateway counts each buyer's own address; without it the named address is ignored, so no
    client can spread its attempts over made-up addresses (docs/web.md)."""
    edge = web_edge_token(gateway.settings)
    buyer_a, buyer_b = fresh_address(), fresh_address()

    def named(ip: str, token: str = edge) -> dict[str, str]:
        return {EDGE_HEADER: token, CLIENT_IP_HEADER: ip}

    async with gateway.client() as web:
        codes = [
            (await web.post("/api/auth/login", json={}, headers=named(buyer_a))).status_code
            for _ in range(LOGIN_RATE + 2)
        ]
        assert codes == [200] * LOGIN_RATE + [429] * 2
        r = await web.post("/api/auth/login", json={}, headers=named(buyer_b))
        assert r.status_code == 200
        seen = {k.lower(): v for k, v in r.json()["headers"]}
        assert seen["x-forwarded-for"] == buyer_b
        assert EDGE_HEADER.lower() not in seen
        assert CLIENT_IP_HEADER.lower() not in seen
    async with gateway.client() as forger:
        # A made-up address per attempt, with no token or a wrong one: counted as itself.
        codes = [
            (
                await forger.post("/api/auth/login", json={}, headers=named(fresh_address(), token))
            ).status_code
            for token in ["", "x" * 64] * LOGIN_RATE
        ]
        assert codes[:LOGIN_RATE] == [200] * LOGIN_RATE
        assert set(codes[LOGIN_RATE:]) == {429}


async def test_client_identity_headers_never_reach_the_service(gateway: Gateway) -> None:
    forged = {
        "X-User-Id": "admin-1",
        "x-user-roles": "admin",
        "X-USER-EMAIL": "boss@example.com",
        "X-Email-Verified": "true",
        "X-Roles": "admin",
        "X-Forwarded-User": "admin",
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Host": "evil.example",
        "X-Auth-Request-User": "admin",
        "X-Real-IP": "6.6.6.6",
        "Forwarded": "for=6.6.6.6",
    }
    ip = fresh_address()
    async with gateway.client(ip) as client:
        for headers in (forged, {**forged, **bearer(gateway.token())}):
            r = await client.get("/api/products", headers=headers)
            assert r.status_code == 200, r.text
            seen = headers_of(r)
            for name in forged:
                if name.lower() != "x-forwarded-for":
                    assert name.lower() not in seen, name
            # Exactly one X-Forwarded-For, set by the gateway to the real client address.
            assert seen["x-forwarded-for"] == [ip]


async def test_request_id_is_the_gateways_own_and_unique(gateway: Gateway) -> None:
    async with gateway.client() as client:
        responses = [
            await client.get("/api/products", headers={"X-Request-Id": "client-chosen"})
            for _ in range(3)
        ]
    ids = []
    for r in responses:
        seen = headers_of(r)["x-request-id"]
        assert len(seen) == 1
        assert seen[0] != "client-chosen"
        uuid.UUID(seen[0])  # a UUID, not a client value
        assert r.headers["x-request-id"] == seen[0]  # the client sees the same id
        ids.append(seen[0])
    assert len(set(ids)) == 3


async def test_request_id_is_in_the_gateway_log_line(gateway: Gateway) -> None:
    async with gateway.client() as client:
        r = await client.get("/api/products/logged")
    rid = r.headers["x-request-id"]
    deadline = time.monotonic() + 5
    while f"request_id={rid}" not in gateway.log_path.read_text():
        assert time.monotonic() < deadline, "request id not logged"
        await asyncio.sleep(0.05)
    line = next(x for x in gateway.log_path.read_text().splitlines() if rid in x)
    assert "/api/products/logged" in line
    assert " 200 " in line


async def test_hundreds_of_concurrent_authenticated_requests(gateway: Gateway) -> None:
    token = gateway.token()
    async with gateway.client() as client:
        rs = await asyncio.gather(
            *(client.get(f"/api/orders/o-{i}", headers=bearer(token)) for i in range(300))
        )
    assert [r.status_code for r in rs] == [200] * 300
    assert [r.json()["path"] for r in rs] == [f"/api/orders/o-{i}" for i in range(300)]
    assert len({r.headers["x-request-id"] for r in rs}) == 300


async def test_login_burst_from_one_ip_gets_429_others_unaffected(gateway: Gateway) -> None:
    burst_ip, other_ip = fresh_address(), fresh_address()
    async with gateway.client(burst_ip) as burst, gateway.client(other_ip) as other:
        rs = await asyncio.gather(
            *(burst.post("/api/auth/login", json={}) for _ in range(LOGIN_RATE + 10))
        )
        codes = sorted(r.status_code for r in rs)
        assert codes == [200] * LOGIN_RATE + [429] * 10
        limited = next(r for r in rs if r.status_code == 429)
        assert_problem(limited, 429, "too_many_requests")
        assert int(limited.headers["retry-after"]) > 0
        # Other routes from the same IP and logins from another IP are not limited.
        assert (await burst.post("/api/auth/refresh", json={})).status_code == 200
        assert (await burst.get("/api/auth/jwks")).status_code == 200
        others = [await other.post("/api/auth/login", json={}) for _ in range(LOGIN_RATE)]
        assert [r.status_code for r in others] == [200] * LOGIN_RATE


async def test_verification_burst_gets_429(gateway: Gateway) -> None:
    async with gateway.client() as client:
        codes = [
            (await client.post(path, json={})).status_code
            for path in ["/api/users/verification", "/api/users/verification/resend"]
            * VERIFICATION_RATE
        ]
    assert codes[:VERIFICATION_RATE] == [200] * VERIFICATION_RATE
    assert codes[VERIFICATION_RATE:] == [429] * VERIFICATION_RATE


async def test_declared_body_over_64_kib_is_413(gateway: Gateway) -> None:
    # A raw request: the gateway answers on the declared length, before any body arrives
    # (a client still writing a big body would see the connection reset, not the answer).
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", gateway.settings.gateway_port, local_addr=(fresh_address(), 0)
    )
    writer.write(
        b"POST /api/products HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Content-Length: 65537\r\n\r\n"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    body = await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"content-type: application/problem+json" in head.lower()
    assert b'"code":"payload_too_large"' in body
    async with gateway.client() as client:
        ok = await client.post("/api/products", content=b"x" * (64 * 1024))
    assert ok.status_code == 200
    assert ok.json()["body_bytes"] == 64 * 1024


async def test_health_and_prometheus_metrics(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.stats_url) as client:
        assert (await client.get("/healthz")).status_code == 200
        metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert re.search(r'haproxy_frontend_http_requests_total\{proxy="api"\} [1-9]', metrics.text)
