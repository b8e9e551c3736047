"""The public catalog and the admin API over HTTP: cursor pagination (hypothesis), filters,
search, live stock on the product page, and bad input answered with problem+json 4xx."""

from __future__ import annotations

import base64
import secrets
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.integration.products.conftest import ProductsEnv

PROBLEM = "application/problem+json"


def _create(env: ProductsEnv, http: httpx.Client, brand: str, name: str, **kw: Any) -> str:
    body = {
        "name": name,
        "brand": brand,
        "price": 150_000,
        "release_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        **kw,
    }
    r = http.post("/api/admin/products", json=body, headers=env.admin)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _walk(
    http: httpx.Client, params: dict[str, Any], sizes: list[int], between: Any = None
) -> list[str]:
    seen: list[str] = []
    cursor = None
    n = 0
    while True:
        q = {**params, "limit": sizes[n % len(sizes)]}
        if cursor:
            q["cursor"] = cursor
        r = http.get("/api/products", params=q)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= q["limit"]
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        if between is not None:
            between(n)
        n += 1


@pytest.fixture(scope="module")
def catalog(products_env: ProductsEnv) -> tuple[str, list[str]]:
    """30 products of one fresh brand."""
    brand = f"PageBrand-{secrets.token_hex(4)}"
    with httpx.Client(base_url=products_env.url, timeout=30) as http:
        ids = [_create(products_env, http, brand, f"Pager {i:02d}") for i in range(30)]
    return brand, ids


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=6),
    inserts=st.lists(st.integers(min_value=0, max_value=3), max_size=8),
)
def test_pages_return_every_row_exactly_once_also_with_inserts(
    products_env: ProductsEnv,
    catalog: tuple[str, list[str]],
    sizes: list[int],
    inserts: list[int],
) -> None:
    brand, _ = catalog
    with httpx.Client(base_url=products_env.url, timeout=30) as http:
        before = set(_walk(http, {"brand": brand}, [100]))
        created: list[str] = []

        def insert_some(n: int) -> None:
            count = inserts[n] if n < len(inserts) else 0
            for _ in range(count):
                created.append(_create(products_env, http, brand, f"Late {secrets.token_hex(3)}"))

        seen = _walk(http, {"brand": brand}, sizes, between=insert_some)
    counts = Counter(seen)
    assert all(c == 1 for c in counts.values()), "a row was repeated"
    assert before <= set(seen), "a row that existed at the start was skipped"
    assert set(seen) <= before | set(created)


def test_pages_are_newest_first_and_stable(
    products_env: ProductsEnv, catalog: tuple[str, list[str]]
) -> None:
    brand, ids = catalog
    with httpx.Client(base_url=products_env.url, timeout=30) as http:
        seen = _walk(http, {"brand": brand}, [7])
    mine = [i for i in seen if i in set(ids)]
    assert mine == list(reversed(ids))


async def test_filters_and_search(products_env: ProductsEnv, client: httpx.AsyncClient) -> None:
    env = products_env
    brand = f"Filt_{secrets.token_hex(3)}%"
    live = await env.product(client, brand=brand, name="Live One")
    await env.item(client, live["id"], 3)
    soon = await env.product(
        client,
        brand=brand,
        name="Upcoming One",
        release_at=(datetime.now(UTC) + timedelta(hours=2)).isoformat(),
    )
    gone = await env.product(client, brand=brand, name="Gone One 100%")
    await env.item(client, gone["id"], 0)

    async def ids(**params: Any) -> set[str]:
        r = await client.get("/api/products", params={"brand": brand, "limit": 100, **params})
        assert r.status_code == 200, r.text
        return {p["id"] for p in r.json()["items"]}

    assert await ids() == {live["id"], soon["id"], gone["id"]}
    assert await ids(status="live") == {live["id"]}
    assert await ids(status="upcoming") == {soon["id"]}
    assert await ids(status="sold_out") == {gone["id"]}
    assert await ids(q="upcoming") == {soon["id"]}  # case-insensitive substring of name
    assert await ids(q="100%") == {gone["id"]}  # '%' is literal, not a wildcard
    assert await ids(q="1_0") == set()  # '_' too
    r = await client.get("/api/products", params={"q": brand[:-1], "limit": 100})
    assert {live["id"], soon["id"], gone["id"]} <= {p["id"] for p in r.json()["items"]}


async def test_product_page_stock_is_live_not_cached(
    products_env: ProductsEnv, client: httpx.AsyncClient
) -> None:
    env = products_env
    product = await env.product(client, name="Live stock", per_user_limit=3)
    item = await env.item(client, product["id"], 5, size=285, color="Volt", price=99_000)
    url = f"/api/products/{product['id']}"
    first = (await client.get(url)).json()
    assert first["status"] == "live"
    assert first["per_user_limit"] == 3
    assert first["items"] == [
        {
            "id": item["id"],
            "size": 285,
            "color": "Volt",
            "price": 99_000,
            "available": True,
            "stock_remaining": 5,
        }
    ]
    r = await env.reserve(client, "ord_" + secrets.token_hex(8), "reader", [(item["id"], 3)])
    assert r.status_code == 201
    # Within the cache TTL: the page still shows the reservation at once.
    assert (await client.get(url)).json()["items"][0]["stock_remaining"] == 2
    r = await env.reserve(client, "ord_" + secrets.token_hex(8), "reader2", [(item["id"], 2)])
    assert r.status_code == 201
    after = (await client.get(url)).json()
    assert (after["items"][0]["available"], after["items"][0]["stock_remaining"]) == (False, 0)
    assert after["status"] == "sold_out"
    # The item details of the internal API agree.
    r = await client.get("/internal/items", params={"ids": item["id"]}, headers=env.internal)
    assert r.json()["items"][0]["stock_remaining"] == 0
    assert r.json()["items"][0]["unit_price"] == 99_000


async def test_admin_patch_product(products_env: ProductsEnv, client: httpx.AsyncClient) -> None:
    env = products_env
    product = await env.product(client, name="Patch me")
    item = (await env.item(client, product["id"], 4))["id"]
    later = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    r = await client.patch(
        f"/api/admin/products/{product['id']}",
        json={"release_at": later.isoformat(), "price": 123_000},
        headers=env.admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["release_at"] == later.isoformat().replace("+00:00", "Z")
    assert r.json()["status"] == "upcoming"
    assert r.json()["items"][0]["price"] == 123_000
    # The gate knows the new release time at once.
    early = await env.reserve(client, "ord_" + secrets.token_hex(8), "early", [(item, 1)])
    assert early.status_code == 409
    assert early.json()["code"] == "drop_not_open"
    r = await client.patch(
        f"/api/admin/products/{product['id']}",
        json={"release_at": (datetime.now(UTC) - timedelta(seconds=1)).isoformat()},
        headers=env.admin,
    )
    assert r.status_code == 200
    ok = await env.reserve(client, "ord_" + secrets.token_hex(8), "early", [(item, 1)])
    assert ok.status_code == 201
    assert ok.json()["total_amount"] == 123_000


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_CURSORS = [
    "garbage!",
    "%%%",
    _b64(b"not json"),
    _b64(b"[1,2]"),
    _b64(b'{"v":2,"id":"x"}'),
    _b64(b'{"v":1,"id":5}'),
    _b64(b'{"v":1,"id":""}'),
    _b64(b'{"v":1}'),
    "A" * 201,
    "\u00e9\u00e9",
]


@pytest.mark.parametrize("cursor", BAD_CURSORS)
async def test_bad_cursor_is_422(client: httpx.AsyncClient, cursor: str) -> None:
    r = await client.get("/api/products", params={"cursor": cursor})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert r.json()["code"] in ("invalid_cursor", "validation_error")


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"status": "gone"}, {"q": "x" * 101}],
)
async def test_bad_list_params_are_422(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    r = await client.get("/api/products", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "validation_error"


async def test_bad_input_is_problem_json_4xx(
    products_env: ProductsEnv, client: httpx.AsyncClient
) -> None:
    env = products_env
    product = await env.product(client, name="Bad input")
    item = (await env.item(client, product["id"], 2))["id"]
    admin, internal = env.admin, env.internal
    soon = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    cases: list[tuple[str, str, Any, dict[str, str], int, str]] = [
        ("GET", "/api/products/01NOPE", None, {}, 404, "not_found"),
        ("GET", "/api/products/bad%20id", None, {}, 422, "validation_error"),
        (
            "POST",
            f"/api/admin/products/{product['id']}/items",
            {"size": 270, "color": "Red", "stock": -1},
            admin,
            422,
            "validation_error",
        ),
        (
            "POST",
            f"/api/admin/products/{product['id']}/items",
            {"size": 9000, "color": "Red", "stock": 1},
            admin,
            422,
            "validation_error",
        ),
        (
            "POST",
            f"/api/admin/products/{product['id']}/items",
            {"size": 20, "color": "Red", "stock": 1},
            admin,
            422,
            "validation_error",
        ),
        (
            "POST",
            "/api/admin/products/01NOPE/items",
            {"size": 270, "color": "Red", "stock": 1},
            admin,
            404,
            "not_found",
        ),
        ("PATCH", "/api/admin/items/01NOPE", {"stock_delta": 1}, admin, 404, "not_found"),
        (
            "PATCH",
            f"/api/admin/items/{item}",
            {"stock_delta": "lots"},
            admin,
            422,
            "validation_error",
        ),
        (
            "PATCH",
            f"/api/admin/items/{item}",
            {"stock_delta": 10**12},
            admin,
            422,
            "validation_error",
        ),
        ("PATCH", "/api/admin/products/01NOPE", {"price": 1}, admin, 404, "not_found"),
        (
            "PATCH",
            f"/api/admin/products/{product['id']}",
            {"price": None},
            admin,
            422,
            "validation_error",
        ),
        (
            "POST",
            "/api/admin/products",
            {"name": "x", "brand": "y", "price": -5, "release_at": soon},
            admin,
            422,
            "validation_error",
        ),
        (
            "POST",
            "/api/admin/products",
            {"name": "x", "brand": "y", "price": 5, "release_at": "2030-01-01T00:00:00"},
            admin,
            422,
            "validation_error",
        ),  # no zone
        (
            "POST",
            "/api/admin/products",
            {"name": "x", "brand": "y", "price": 5, "release_at": soon},
            {},
            401,
            "unauthorized",
        ),
        ("POST", "/internal/reservations", {}, {}, 403, "forbidden"),
        (
            "POST",
            "/internal/reservations",
            {
                "reservation_id": "r",
                "buyer_id": "b",
                "lines": [{"item_id": "01NOPE", "quantity": 1}],
                "reserved_until": soon,
            },
            internal,
            404,
            "not_found",
        ),
        (
            "POST",
            "/internal/reservations",
            {
                "reservation_id": "r",
                "buyer_id": "b",
                "lines": [{"item_id": item, "quantity": 0}],
                "reserved_until": soon,
            },
            internal,
            422,
            "validation_error",
        ),
        (
            "POST",
            "/internal/reservations",
            {"reservation_id": "r", "buyer_id": "b", "lines": [], "reserved_until": soon},
            internal,
            422,
            "validation_error",
        ),
        (
            "POST",
            "/internal/reservations",
            {
                "reservation_id": "r/../x",
                "buyer_id": "b",
                "lines": [{"item_id": item, "quantity": 1}],
                "reserved_until": soon,
            },
            internal,
            422,
            "validation_error",
        ),
        ("POST", "/internal/reservations/01NOPE/release", None, internal, 404, "not_found"),
        ("POST", "/internal/reservations/01NOPE/commit", None, internal, 404, "not_found"),
        (
            "GET",
            "/internal/items?ids=" + ",".join(["x"] * 101),
            None,
            internal,
            422,
            "validation_error",
        ),
    ]
    for method, path, body, headers, status, code in cases:
        r = await client.request(method, path, json=body, headers=headers)
        assert (r.status_code, r.json().get("code")) == (status, code), (method, path, r.text)
        assert r.headers["content-type"].startswith(PROBLEM), path
    # Malformed JSON
    r = await client.post(
        "/internal/reservations",
        content=b"{not json",
        headers={**internal, "content-type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_json"
    # Unknown item ids are named.
    r = await env.reserve(client, "ord_x1", "b", [(item, 1), ("01NOPE", 1)])
    assert r.status_code == 404
    assert r.json()["item_ids"] == ["01NOPE"]
    # A non-admin token is 403.
    from snapshoe.kernel.auth import build_issuer

    token, _ = build_issuer(env.settings).issue_access("user-1", email_verified=True)
    r = await client.post(
        "/api/admin/products",
        json={"name": "x", "brand": "y", "price": 1, "release_at": soon},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert (r.status_code, r.json()["code"]) == (403, "forbidden")
    # Nothing was changed by any of it.
    assert await env.ledger(item) == {"initial": 2, "sold": 0, "reserved": 0, "available": 2}


async def test_drop_not_open_before_release_at(
    products_env: ProductsEnv, client: httpx.AsyncClient
) -> None:
    env = products_env
    product = await env.product(
        client,
        name="Future drop",
        release_at=(datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
    )
    item = (await env.item(client, product["id"], 5))["id"]
    r = await env.reserve(client, "ord_" + secrets.token_hex(8), "fast", [(item, 1)])
    assert r.status_code == 409
    assert r.json()["code"] == "drop_not_open"
    assert r.json()["product_id"] == product["id"]
    assert await env.ledger(item) == {"initial": 5, "sold": 0, "reserved": 0, "available": 5}


async def test_readyz_names_its_checks_as_every_service_does(client: httpx.AsyncClient) -> None:
    # One name per dependency across services (issue 13): "database", not "db".
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "redis": "ok"}
