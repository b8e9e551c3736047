"""The real HAProxy gateway: paths are normalized before any ACL reads them (an encoded or
dotted spelling of a limited route counts against its limit), ambiguous paths are refused,
sign-up and password reset are limited per client IP, and only the sandbox PG's buyer-side
endpoints are routed, outside production only (issue 12, items 1, 2 and 5)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.gateway.conftest import (
    DRAW_ENTRY_RATE,
    LOGIN_RATE,
    PASSWORD_RESET_RATE,
    QUEUE_JOIN_RATE,
    SIGNUP_RATE,
    VERIFICATION_RATE,
    Gateway,
    fresh_address,
    gateway_test_settings,
    run_haproxy,
)
from tests.integration.gateway.test_gateway_bounds import log_line

from snapshoe.kernel.settings import Settings

LOGIN_SPELLINGS = [
    "/api/auth/logi%6e",
    "/api/auth/logi%6E",
    "/api/auth/%6C%6F%67%69%6E",
    "//api/auth/login",
    "/api//auth/login",
    "/api/auth//login",
    "/api/auth/./login",
    "/api/auth/%2e/login",
    "/api/auth/x/../login",
    "/api/auth/x/%2E%2E/login",
    "/api/users/../auth/login",
    "/api/auth/login/",
    "/api/auth/login/.",
]

VERIFICATION_SPELLINGS = [
    "/api/users/verificatio%6e",
    "/api/users/verification/resen%64",
    "/api/users//verification",
    "/api/users/./verification/resend",
]

# Still ambiguous once normalized: an encoded reserved or control character a service would
# decode into something else than what the gateway matched. Never forwarded.
AMBIGUOUS = [
    "/api/auth%2Flogin",
    "/api/auth%2flogin",
    "/api/users/me%2F..%2Fverification",
    "/api/auth/login%00",
    "/api/auth/login%5C",
    "/api/products/a%5cb",
    "/api/products/a%20b",
    "/api/products/%25",
    "/pg/v1/sandbox%2Fauthorizations",
    "/api/auth\\login",  # a raw backslash
]

# The admin orders API and the operator's figures are the orders service's, every spelling of
# them; the rest of /api/admin/ stays products' (a path that only starts like them, too).
ADMIN_ORDERS = [
    ("GET", "/api/admin/orders"),
    ("GET", "/api/admin/orders?status=PREPARING&buyer_email=a%40b.example&limit=5"),
    ("GET", "/api/admin/orders/o-1"),
    ("POST", "/api/admin/orders/o-1/refund"),
    ("GET", "/api/admin/./orders"),
    ("GET", "//api/admin/orders/o-1"),
    ("GET", "/api/admin/order%73/o-1"),
    ("POST", "/api/admin/x/../orders/o-1/refund"),
    ("GET", "/api/admin/products/p-1/sales"),
    ("GET", "/api/admin/products/./p-1/sales"),
    ("GET", "/api/admin/operations"),
    ("GET", "/api/admin/operation%73"),
]
ADMIN_PRODUCTS = [
    ("POST", "/api/admin/products"),
    ("GET", "/api/admin/products/p-1/queue"),
    ("PATCH", "/api/admin/items/i-1"),
    ("GET", "/api/admin/ordersx"),
    ("GET", "/api/admin/products/p-1/salesx"),
    ("GET", "/api/admin/products/p-1/sales/x"),
    ("GET", "/api/admin/operationsx"),
]

# Broken percent sequences: HAProxy's strict decoder refuses them (its own 400).
BROKEN = ["/api/products/%zz", "/api/products/%%36%36", "/api/products/%4"]

PG_BUYER = [
    ("POST", "/pg/v1/sandbox/authorizations", "/v1/sandbox/authorizations"),
    ("POST", "/pg/v1/billing/authorizations/card", "/v1/billing/authorizations/card"),
    # The payment window (결제창): its page and the form on it.
    ("GET", "/pg/v1/sandbox/checkout", "/v1/sandbox/checkout"),
    ("POST", "/pg/v1/sandbox/checkout", "/v1/sandbox/checkout"),
]

# The sandbox's private API (knobs, reads, the Toss API its secret key guards) and every
# other method on the buyer paths: a gateway 404 in every environment.
PG_PRIVATE = [
    ("GET", "/pg/v1/sandbox/config"),
    ("PUT", "/pg/v1/sandbox/config"),
    ("DELETE", "/pg/v1/sandbox/config"),
    ("GET", "/pg/v1/sandbox/orders/o-1/charges"),
    ("POST", "/pg/v1/payments/confirm"),
    ("POST", "/pg/v1/payments/pk-1/cancel"),
    ("GET", "/pg/v1/payments/pk-1"),
    ("GET", "/pg/v1/payments/orders/o-1"),
    ("GET", "/pg/v1/sandbox/authorizations"),
    ("PUT", "/pg/v1/sandbox/authorizations"),
    ("POST", "/pg/v1/sandbox/authorizations/x"),
    ("POST", "/pg/v1/sandbox/%63onfig"),
    ("PUT", "/pg/v1/sandbox/authorizations/../config"),
    ("POST", "/pg/v1/billing/authorizations"),
    ("PUT", "/pg/v1/sandbox/checkout"),
    ("DELETE", "/pg/v1/sandbox/checkout"),
    ("GET", "/pg/v1/sandbox/checkout/x"),
    ("POST", "/pg/v1/sandbox/checkouts"),
    ("GET", "/pg/v1/sandbox/checkout/../config"),
    ("GET", "/pg/healthz"),
    ("GET", "/pg/metrics"),
]


@dataclass
class Raw:
    status_code: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("latin-1")

    def json(self) -> Any:
        return json.loads(self.body)


class RawClient:
    """HTTP/1.1 with the request target sent byte for byte: httpx (like any URL library)
    removes ``.`` and ``..`` segments itself, which would hide what the gateway does."""

    def __init__(self, settings: Settings, ip: str | None = None) -> None:
        self.port = settings.gateway_port
        self.ip = ip or fresh_address()

    async def post(self, target: str, body: bytes = b"{}", **headers: str) -> Raw:
        return await self.request("POST", target, body, **headers)

    async def request(self, method: str, target: str, body: bytes = b"{}", **headers: str) -> Raw:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=(self.ip, 0)
        )
        extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"{method} {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        head, _, payload = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines[1:])
        return Raw(int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, payload)


def assert_problem(r: httpx.Response | Raw, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["code"] == code
    assert "path" not in body  # a gateway answer: the upstream never saw the request
    return body


async def trip(client: RawClient, path: str, rate: int) -> None:
    codes = [(await client.post(path)).status_code for _ in range(rate)]
    assert codes == [200] * rate
    assert_problem(await client.post(path), 429, "too_many_requests")


@pytest.mark.parametrize("path", LOGIN_SPELLINGS)
async def test_another_spelling_of_login_counts_against_the_login_limit(
    gateway: Gateway, path: str
) -> None:
    client = RawClient(gateway.settings)
    await trip(client, "/api/auth/login", LOGIN_RATE)
    assert_problem(await client.post(path), 429, "too_many_requests")


async def test_the_login_limit_counts_every_spelling_before_it_trips(gateway: Gateway) -> None:
    client = RawClient(gateway.settings)
    spelled = [(await client.post(p)).status_code for p in LOGIN_SPELLINGS]
    # One counter for all of them: LOGIN_RATE pass, whatever the spelling, the rest are 429.
    assert spelled == [200] * LOGIN_RATE + [429] * (len(LOGIN_SPELLINGS) - LOGIN_RATE)


@pytest.mark.parametrize("path", VERIFICATION_SPELLINGS)
async def test_another_spelling_of_verification_counts_against_its_limit(
    gateway: Gateway, path: str
) -> None:
    client = RawClient(gateway.settings)
    await trip(client, "/api/users/verification", VERIFICATION_RATE)
    assert_problem(await client.post(path), 429, "too_many_requests")


@pytest.mark.parametrize(
    ("path", "normalized"),
    [
        ("/api/auth/./logi%6e", "/api/auth/login"),
        ("//api/products/%70-1", "/api/products/p-1"),
        ("/api/products/x/../p-2", "/api/products/p-2"),
        ("/api/products/%7e%2D%5f%2E", "/api/products/~-_."),
        ("/pg/v1/sandbox/authorization%73", "/v1/sandbox/authorizations"),
    ],
)
async def test_the_service_gets_the_path_the_gateway_checked(
    gateway: Gateway, path: str, normalized: str
) -> None:
    r = await RawClient(gateway.settings).post(path)
    assert r.status_code == 200, r.text
    assert r.json()["raw_path"] == normalized


async def test_the_query_string_keeps_its_encoded_characters(gateway: Gateway) -> None:
    # Only the path must be unambiguous: a query may hold any encoded character (a search for
    # "cafe au/lait"); decoding an unreserved one (%6e is n) changes nothing it means.
    async with gateway.client() as client:
        r = await client.get("/api/products?q=caf%C3%A9%20au%2Flait&brand=%6e")
    assert r.status_code == 200, r.text
    assert r.json()["query"] == "q=caf%C3%A9%20au%2Flait&brand=n"


@pytest.mark.parametrize("path", AMBIGUOUS)
async def test_an_ambiguous_path_is_refused(gateway: Gateway, path: str) -> None:
    r = await RawClient(gateway.settings).post(path, Authorization=f"Bearer {gateway.token()}")
    assert_problem(r, 400, "ambiguous_path")


@pytest.mark.parametrize(
    ("method", "path", "backend"),
    [(m, p, "orders") for m, p in ADMIN_ORDERS] + [(m, p, "products") for m, p in ADMIN_PRODUCTS],
)
async def test_admin_orders_go_to_orders_and_the_rest_of_admin_to_products(
    gateway: Gateway, method: str, path: str, backend: str
) -> None:
    client = RawClient(gateway.settings)
    # Protected like the rest of /api/admin/: no token, no backend.
    assert_problem(await client.request(method, path, b""), 401, "unauthorized")
    r = await client.request(method, path, b"", Authorization=f"Bearer {gateway.token()}")
    assert r.status_code == 200, r.text
    assert r.json()["method"] == method
    line = await asyncio.to_thread(log_line, gateway.log_path, r.headers["x-request-id"])
    assert f" {backend}/{backend} " in line, line


@pytest.mark.parametrize("path", BROKEN)
async def test_a_broken_percent_sequence_is_a_problem_400(gateway: Gateway, path: str) -> None:
    assert_problem(await RawClient(gateway.settings).request("GET", path, b""), 400, "bad_request")


async def test_signup_burst_from_one_ip_gets_429_others_unaffected(gateway: Gateway) -> None:
    burst, other = RawClient(gateway.settings), RawClient(gateway.settings)
    await trip(burst, "/api/users", SIGNUP_RATE)
    for spelled in ["/api/user%73", "//api/users", "/api/./users", "/api/x/../users"]:
        assert_problem(await burst.post(spelled), 429, "too_many_requests")
    # Reading products or logging in from that address is not counted as signing up.
    assert (await burst.request("GET", "/api/products", b"")).status_code == 200
    assert (await burst.post("/api/auth/login")).status_code == 200
    others = [(await other.post("/api/users")).status_code for _ in range(SIGNUP_RATE)]
    assert others == [200] * SIGNUP_RATE


async def test_password_reset_and_confirm_share_a_per_ip_limit(gateway: Gateway) -> None:
    paths = ["/api/auth/password-reset", "/api/auth/password-reset/confirm"]
    burst, other = RawClient(gateway.settings), RawClient(gateway.settings)
    codes = [(await burst.post(paths[n % 2])).status_code for n in range(PASSWORD_RESET_RATE + 2)]
    assert codes == [200] * PASSWORD_RESET_RATE + [429, 429]
    for spelled in ["/api/auth/password-rese%74", "/api/auth/password-reset/./confir%6d"]:
        assert_problem(await burst.post(spelled), 429, "too_many_requests")
    assert (await other.post(paths[0])).status_code == 200


async def test_queue_joins_from_one_ip_are_limited_and_need_a_token(gateway: Gateway) -> None:
    burst, other = RawClient(gateway.settings), RawClient(gateway.settings)
    assert_problem(await burst.post("/api/products/P1/queue"), 401, "unauthorized")
    assert_problem(
        await burst.request("GET", "/api/products/P1/queue/me", b""), 401, "unauthorized"
    )
    auth = {"Authorization": f"Bearer {gateway.token()}"}
    codes = [
        (await burst.post(f"/api/products/P{n}/queue", **auth)).status_code
        for n in range(QUEUE_JOIN_RATE - 1)  # the refused join above counted too
    ]
    assert codes == [200] * (QUEUE_JOIN_RATE - 1)  # (the echo upstream answers 200)
    for spelled in ["/api/products/P9/queu%65", "/api/products/./P9/queue/"]:
        assert_problem(await burst.post(spelled, **auth), 429, "too_many_requests")
    # Reading a ticket is not joining; another address joins freely.
    assert (await burst.request("GET", "/api/products/P1/queue/me", b"", **auth)).status_code == 200
    assert (await other.post("/api/products/P1/queue", **auth)).status_code == 200


async def test_draw_entries_from_one_ip_are_limited_and_need_a_token(gateway: Gateway) -> None:
    burst, other = RawClient(gateway.settings), RawClient(gateway.settings)
    assert_problem(await burst.post("/api/products/P1/entries"), 401, "unauthorized")
    for method in ("GET", "DELETE"):
        assert_problem(
            await burst.request(method, "/api/products/P1/entries/me", b""), 401, "unauthorized"
        )
    # The published draw is public.
    assert (await burst.request("GET", "/api/products/P1/draw", b"")).status_code == 200
    auth = {"Authorization": f"Bearer {gateway.token()}"}
    codes = [
        (await burst.post(f"/api/products/P{n}/entries", **auth)).status_code
        for n in range(DRAW_ENTRY_RATE - 1)  # the refused entry above counted too
    ]
    assert codes == [200] * (DRAW_ENTRY_RATE - 1)  # (the echo upstream answers 200)
    for spelled in ["/api/products/P9/entrie%73", "/api/products/./P9/entries/"]:
        assert_problem(await burst.post(spelled, **auth), 429, "too_many_requests")
    # Reading or withdrawing one's entry is not entering; another address enters freely.
    assert (
        await burst.request("GET", "/api/products/P1/entries/me", b"", **auth)
    ).status_code == 200
    assert (await other.post("/api/products/P1/entries", **auth)).status_code == 200


@pytest.mark.parametrize(("method", "path", "upstream_path"), PG_BUYER)
async def test_the_buyer_side_pg_endpoints_are_routed_in_dev(
    gateway: Gateway, method: str, path: str, upstream_path: str
) -> None:
    assert gateway.settings.environment == "dev"
    r = await RawClient(gateway.settings).request(method, path)
    assert r.status_code == 200, r.text
    assert r.json()["method"] == method
    assert r.json()["raw_path"] == upstream_path
    line = await asyncio.to_thread(log_line, gateway.log_path, r.headers["x-request-id"])
    assert " sandbox_pg/sandbox_pg " in line, line


async def test_the_payment_window_gets_its_query_as_the_store_encoded_it(
    gateway: Gateway,
) -> None:
    query = (
        "orderId=ord_8f3a9c2e1b&amount=189000&orderName=%EC%97%90%EC%96%B4%20%EB%A7%A5%EC%8A%A4"
        "&successUrl=https%3A%2F%2Fshop.example%2Fpay%2Fok%3Fcart%3D7&failUrl=https%3A%2F%2Fx%2Ff"
    )
    r = await RawClient(gateway.settings).request("GET", f"/pg/v1/sandbox/checkout?{query}", b"")
    assert r.status_code == 200, r.text
    assert r.json()["raw_path"] == "/v1/sandbox/checkout"
    assert r.json()["query"] == query


@pytest.mark.parametrize(("method", "path"), PG_PRIVATE)
async def test_the_pg_private_api_is_a_gateway_404(
    gateway: Gateway, method: str, path: str
) -> None:
    assert_problem(await RawClient(gateway.settings).request(method, path), 404, "not_found")


@pytest.mark.parametrize(("environment", "routed"), [("test", True), ("production", False)])
async def test_pg_routing_follows_the_environment(
    gateway_settings: Settings,
    upstream: str,
    tmp_path: Path,
    environment: str,
    routed: bool,
) -> None:
    settings = gateway_test_settings(tmp_path, gateway_settings.users_port, environment=environment)
    with run_haproxy(settings):
        client = RawClient(settings)
        for method, path, upstream_path in PG_BUYER:
            r = await client.request(method, path)
            if routed:
                assert r.status_code == 200, r.text
                assert r.json()["raw_path"] == upstream_path
            else:
                assert_problem(r, 404, "not_found")
        for method, path in PG_PRIVATE:
            assert_problem(await client.request(method, path), 404, "not_found")
        # The rest of the API is the same in every environment.
        assert (await client.request("GET", "/api/products", b"")).status_code == 200
