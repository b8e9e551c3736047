"""The sandbox PG app in-process (memory store, httpx's ASGI transport, the real lifespan):
what needs a fake clock or thousands of inputs. Over real HTTP: tests/integration."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapshoe.kernel.settings import Settings
from snapshoe.sandbox_pg.api import ResponseLost
from snapshoe.sandbox_pg.bootstrap import create_app
from snapshoe.sandbox_pg.deps import Deps
from snapshoe.sandbox_pg.settings import SandboxSettings

SECRET = "test_sk_unit"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{SECRET}:".encode()).decode()}


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


Client = httpx.AsyncClient


@pytest.fixture(scope="module")
async def app_client() -> AsyncIterator[tuple[Client, Deps]]:
    app = create_app(
        Settings(pg_secret_key=SECRET, log_level="WARNING"),
        SandboxSettings(store="memory", session_ttl_seconds=600, decline_rate=0.0),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://sandbox", headers=AUTH
        ) as client:
            yield client, app.state.deps


@pytest.fixture
async def client(app_client: tuple[Client, Deps]) -> Client:
    c, deps = app_client
    deps.clock = Clock()
    assert (await c.delete("/v1/sandbox/config")).status_code == 200
    return c


@pytest.fixture
def clock(app_client: tuple[Client, Deps], client: Client) -> Clock:
    clock = app_client[1].clock
    assert isinstance(clock, Clock)
    return clock


_n = iter(range(10**9))


async def authorize(client: Client, card: str = "4330123412340000", amount: int = 1000) -> str:
    oid = f"ord_unit_{next(_n):06d}"
    r = await client.post(
        "/v1/sandbox/authorizations",
        json={"order_id": oid, "amount": amount, "card_number": card},
    )
    assert r.status_code == 200, r.text
    key: str = r.json()["payment_key"]
    return f"{key} {oid}"


async def confirm(client: Client, pair: str, amount: int = 1000, **headers: str) -> Any:
    key, oid = pair.split()
    return await client.post(
        "/v1/payments/confirm",
        json={"paymentKey": key, "orderId": oid, "amount": amount},
        headers=headers,
    )


async def test_an_unconfirmed_payment_expires(client: Client, clock: Clock) -> None:
    pair = await authorize(client)
    clock.now += 601
    r = await confirm(client, pair)
    assert r.status_code == 404
    assert r.json()["code"] == "NOT_FOUND_PAYMENT_SESSION"
    key = pair.split()[0]
    assert (await client.get(f"/v1/payments/{key}")).json()["status"] == "EXPIRED"
    assert (await confirm(client, pair)).json()["code"] == "NOT_FOUND_PAYMENT_SESSION"


async def test_confirm_in_time_is_approved(client: Client, clock: Clock) -> None:
    pair = await authorize(client)
    clock.now += 599
    assert (await confirm(client, pair)).json()["status"] == "DONE"


async def test_a_lost_response_is_cut_after_the_approval_is_stored(client: Client) -> None:
    pair = await authorize(client, card="4330123412340009")
    # In-process there is no socket to cut: the planned exception reaches the client.
    with pytest.raises(ResponseLost):
        await confirm(client, pair, **{"Idempotency-Key": "u-lost"})
    _key, oid = pair.split()
    assert (await client.get(f"/v1/payments/orders/{oid}")).json()["status"] == "DONE"
    replay = await confirm(client, pair, **{"Idempotency-Key": "u-lost"})
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert (await client.get(f"/v1/sandbox/orders/{oid}/charges")).json()["charges"] == 1


async def test_idempotency_is_scoped_by_path_not_body(client: Client) -> None:
    """Toss scopes a key by (key, secret, URL, method): another body with the same key on
    the same URL gets the first answer; the same key on another URL is independent."""
    a, b = await authorize(client), await authorize(client)
    first = await confirm(client, a, **{"Idempotency-Key": "shared"})
    assert first.status_code == 200
    second = await confirm(client, b, **{"Idempotency-Key": "shared"})
    assert second.json() == first.json()  # b was not confirmed
    assert (await client.get(f"/v1/payments/{b.split()[0]}")).json()["status"] == "READY"
    key = a.split()[0]
    r = await client.post(
        f"/v1/payments/{key}/cancel",
        json={"cancelReason": "x"},
        headers={"Idempotency-Key": "shared"},
    )
    assert r.json()["status"] == "CANCELED"


async def test_config_put_replaces_and_keeps_startup_defaults(client: Client) -> None:
    r = await client.put("/v1/sandbox/config", json={"decline_rate": 0.25})
    assert r.json()["decline_rate"] == 0.25
    assert r.json()["latency_ms"] == 0
    r = await client.put("/v1/sandbox/config", json={"latency_ms": 5})
    assert r.json()["decline_rate"] == 0.0  # PUT replaces: omitted fields are defaults again
    assert (await client.get("/v1/sandbox/config")).json()["latency_ms"] == 5


async def test_openapi_lists_the_toss_and_sandbox_routes(client: Client) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in (
        "/v1/payments/confirm",
        "/v1/payments/{payment_key}/cancel",
        "/v1/payments/{payment_key}",
        "/v1/payments/orders/{order_id}",
        "/v1/sandbox/authorizations",
        "/v1/sandbox/config",
        "/v1/sandbox/orders/{order_id}/charges",
    ):
        assert path in paths


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
confirm_like = st.fixed_dictionaries(
    {},
    optional={
        "paymentKey": json_values,
        "orderId": json_values | st.from_regex(r"\A[A-Za-z0-9_-]{6,64}\Z"),
        "amount": json_values,
    },
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=json_values | confirm_like, idem=st.none() | st.text(min_size=1, max_size=40))
async def test_any_confirm_body_gets_a_toss_4xx_never_a_500(
    client: Client, body: Any, idem: str | None
) -> None:
    headers = {"Idempotency-Key": idem} if idem and idem.isascii() and idem.isprintable() else {}
    r = await client.post("/v1/payments/confirm", json=body, headers=headers)
    assert 400 <= r.status_code < 500, r.text
    data = r.json()
    assert isinstance(data["code"], str)
    assert isinstance(data["message"], str)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=json_values, path=st.text(min_size=1, max_size=30))
async def test_any_cancel_or_authorization_gets_a_4xx_never_a_500(
    client: Client, body: Any, path: str
) -> None:
    r = await client.post(f"/v1/payments/{quote(path, safe='')}/cancel", json=body)
    assert 400 <= r.status_code < 500, r.text
    r = await client.post("/v1/sandbox/authorizations", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
