"""The merged public API (``GET /api/openapi.json``, served by the web tier through the
gateway) is true: a client generated from it with openapi-python-client completes a purchase
against the running platform. Also: what the merged spec declares, and ``/api/docs``."""

from __future__ import annotations

import importlib
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import orjson
import pytest
from tests.integration.orders.helpers import OrdersEnv
from tests.support.platform import Platform, fresh_address
from tests.support.waiting import eventually

APPROVE = "4111111111110000"
PACKAGE = "snapshoe_client"


@pytest.fixture(scope="module")
async def spec(platform: Platform) -> dict[str, Any]:
    async with platform.client() as c:
        r = await c.get("/api/openapi.json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    data: dict[str, Any] = r.json()
    return data


@pytest.fixture(scope="module")
def client_package(
    spec: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModuleType]:
    """The client, generated into a temporary directory and imported."""
    root = tmp_path_factory.mktemp("generated")
    (root / "spec.json").write_bytes(orjson.dumps(spec))
    (root / "config.yml").write_text(f"post_hooks: []\npackage_name_override: {PACKAGE}\n")
    generator = Path(sys.executable).parent / "openapi-python-client"
    done = subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(root / "spec.json"),
            "--config",
            str(root / "config.yml"),
            "--meta",
            "none",
            "--output-path",
            str(root / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
async def orders_env(platform: Platform) -> AsyncIterator[OrdersEnv]:
    env = OrdersEnv(platform)
    try:
        yield env
    finally:
        await env.aclose()


def _mod(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def _value(field: Any) -> str:
    """A generated enum's value (a plain string field is itself)."""
    return str(getattr(field, "value", field))


def _transport() -> dict[str, Any]:
    # A fresh source address per client: the gateway's per-address sign-up and login limits.
    return {"transport": httpx.AsyncHTTPTransport(local_address=fresh_address(), retries=0)}


async def _sign_up_and_log_in(platform: Platform, client: Any) -> str:
    models = _mod("models")
    email = f"generated-{secrets.token_hex(6)}@example.com"
    password = "correct-Horse-battery-9"
    signup = _mod("api.accounts.sign_up_api_users_post")
    r = await signup.asyncio_detailed(
        client=client, body=models.SignupRequest(email=email, password=password, name="Gen")
    )
    assert r.status_code == 202, r.content
    code = await platform.read_code(email)
    verify = _mod("api.accounts.verify_api_users_verification_post")
    r = await verify.asyncio_detailed(
        client=client, body=models.VerificationRequest(email=email, code=code)
    )
    assert r.status_code == 200, r.content
    login = _mod("api.auth.login_api_auth_login_post")
    tokens = await login.asyncio(
        client=client, body=models.LoginRequest(email=email, password=password)
    )
    assert isinstance(tokens, models.TokenResponse), tokens
    return str(tokens.access_token)


async def test_a_generated_client_completes_a_purchase(
    client_package: ModuleType, platform: Platform, orders_env: OrdersEnv
) -> None:
    models = _mod("models")
    async with orders_env.client() as admin_http:
        product, _ = await orders_env.drop(admin_http, [3], price=99_000)
    anonymous = client_package.Client(base_url=platform.gateway, httpx_args=_transport())
    async with anonymous:
        token = await _sign_up_and_log_in(platform, anonymous)
        page = await _mod("api.catalog.list_products_api_products_get").asyncio(
            client=anonymous, q=product["name"]
        )
        assert isinstance(page, models.ProductPage), page
        assert product["id"] in [p.id for p in page.items]
        detail = await _mod("api.catalog.get_product_api_products_product_id_get").asyncio(
            product["id"], client=anonymous
        )
        assert isinstance(detail, models.ProductDetail), detail
    buyer = client_package.AuthenticatedClient(
        base_url=platform.gateway, token=token, httpx_args=_transport()
    )
    async with buyer:
        order = await _mod("api.orders.create_order_api_orders_post").asyncio(
            client=buyer,
            body=models.CreateOrder(lines=[models.LineIn(item_id=detail.items[0].id, quantity=1)]),
            idempotency_key=secrets.token_urlsafe(16),
        )
        assert isinstance(order, models.OrderOut), order
        assert _value(order.status) == "PENDING_PAYMENT"
        assert order.total_amount == 99_000
        async with platform.client() as pg:  # the PG's card form: not in the public spec
            r = await pg.post(
                "/pg/v1/sandbox/authorizations",
                json={"order_id": order.id, "amount": order.total_amount, "card_number": APPROVE},
            )
        assert r.status_code == 200, r.text
        payment = await _mod("api.payments.confirm_api_payments_confirm_post").asyncio(
            client=buyer,
            body=models.ConfirmRequest(
                order_id=order.id, payment_key=r.json()["payment_key"], amount=order.total_amount
            ),
            idempotency_key=secrets.token_urlsafe(16),
        )
        assert isinstance(payment, models.PaymentOut), payment
        assert _value(payment.status) == "DONE"
        get_order = _mod("api.orders.get_order_api_orders_order_id_get")

        async def status() -> str:
            read = await get_order.asyncio(order.id, client=buyer)
            assert isinstance(read, models.OrderOut), read
            return _value(read.status)

        await eventually(status, lambda s: s == "PREPARING", timeout=20)


async def test_the_merged_spec_is_public_and_declares_auth_and_headers(
    spec: dict[str, Any],
) -> None:
    paths: dict[str, Any] = spec["paths"]
    assert not [p for p in paths if p.startswith("/internal")]
    assert {"/api/orders", "/api/users", "/api/products", "/api/payments/confirm"} <= set(paths)
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    create = paths["/api/orders"]["post"]
    names = {p["name"] for p in create["parameters"] if p["in"] == "header"}
    assert {"Idempotency-Key", "Admission-Token"} <= names
    assert create["security"] == [{"bearerAuth": []}]
    confirm = paths["/api/payments/confirm"]["post"]
    assert "Idempotency-Key" in {p["name"] for p in confirm["parameters"]}
    assert set(spec["components"]["schemas"]["Problem"]["required"]) == {
        "type",
        "title",
        "status",
        "detail",
        "code",
    }
    assert "HTTPValidationError" not in spec["components"]["schemas"]


async def test_every_error_answer_is_a_problem(spec: dict[str, Any]) -> None:
    wrong = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                if int(status) < 400:
                    continue
                content = response.get("content", {})
                ref = content.get("application/problem+json", {}).get("schema", {}).get("$ref")
                if ref != "#/components/schemas/Problem" or len(content) != 1:
                    wrong.append(f"{method} {path} {status}")
    assert not wrong


async def test_api_docs_is_an_html_page_through_the_gateway(platform: Platform) -> None:
    async with platform.client() as c:
        r = await c.get("/api/docs")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "<script" not in r.text
    for text in ("POST /api/orders", "Idempotency-Key", "Admission-Token", "schema-Problem"):
        assert text in r.text
