"""Helpers of the orders tests (also used by tests/e2e/test_purchase_flow.py).

Buyers are either real (signed up and verified through the gateway: ``platform.verified_user``)
or minted: an access token signed with the platform's real key for a fresh user id, which every
verifier accepts exactly like a real login's (the orders service trusts only the token). Minted
buyers keep the big concurrency tests from spending minutes on argon2 sign-ups.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import aio_pika
import httpx
import orjson
from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tests.support.platform import Platform

from snapshoe.kernel.auth import TokenIssuer, build_issuer
from snapshoe.kernel.contracts import Event
from snapshoe.kernel.internal import internal_headers
from snapshoe.kernel.messaging import exchange_name
from snapshoe.kernel.settings import Settings

T = TypeVar("T")


@dataclass
class Buyer:
    id: str
    auth: dict[str, str]


_issuers: dict[str, TokenIssuer] = {}


def mint_buyer(settings: Settings, *, verified: bool = True, roles: tuple[str, ...] = ()) -> Buyer:
    path = str(settings.private_key_path)
    issuer = _issuers.get(path) or _issuers.setdefault(path, build_issuer(settings))
    user_id = f"tb{secrets.token_hex(8)}"
    token, _ = issuer.issue_access(user_id, email_verified=verified, roles=roles)
    return Buyer(user_id, {"Authorization": f"Bearer {token}"})


def admin_headers(settings: Settings) -> dict[str, str]:
    return mint_buyer(settings, roles=("admin",)).auth


APPROVE_CARD = "4111111111110000"


async def pay(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    order: dict[str, Any],
    card: str = APPROVE_CARD,
) -> dict[str, Any]:
    """Authorize at the sandbox PG as the buyer's browser would, then confirm (200 asserted);
    the payment."""
    r = await client.post(
        "/pg/v1/sandbox/authorizations",
        json={"order_id": order["id"], "amount": order["total_amount"], "card_number": card},
    )
    assert r.status_code == 200, r.text
    r = await client.post(
        "/api/payments/confirm",
        json={
            "order_id": order["id"],
            "payment_key": r.json()["payment_key"],
            "amount": order["total_amount"],
        },
        headers={**auth, "Idempotency-Key": key()},
    )
    assert r.status_code == 200, r.text
    payment: dict[str, Any] = r.json()
    return payment


def key() -> str:
    return f"k-{secrets.token_urlsafe(12)}"


class OrdersEnv:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.settings = platform.settings
        self.orders_db: AsyncEngine = create_async_engine(
            self.settings.database_url("orders"), poolclass=pool.NullPool
        )
        self.products_db: AsyncEngine = create_async_engine(
            self.settings.database_url("products"), poolclass=pool.NullPool
        )
        self.internal = internal_headers(self.settings)

    async def aclose(self) -> None:
        await self.orders_db.dispose()
        await self.products_db.dispose()

    def client(self, **kw: Any) -> httpx.AsyncClient:
        return self.platform.client(**kw)

    def buyer(self, **kw: Any) -> Buyer:
        return mint_buyer(self.settings, **kw)

    async def drop(
        self,
        client: httpx.AsyncClient,
        stocks: list[int],
        *,
        price: int = 150_000,
        per_user_limit: int = 0,
        opens_in: timedelta = timedelta(hours=-1),
        name: str | None = None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A product (released ``opens_in`` from now) with one item per stock, sizes 250, 255..."""
        admin = admin_headers(self.settings)
        r = await client.post(
            "/api/admin/products",
            json={
                "name": name or f"Drop {secrets.token_hex(3)}",
                "brand": "SnapTest",
                "description": "orders test drop",
                "price": price,
                "release_at": (datetime.now(UTC) + opens_in).isoformat(),
                "per_user_limit": per_user_limit,
            },
            headers=admin,
        )
        assert r.status_code == 201, r.text
        product = r.json()
        items = []
        for n, stock in enumerate(stocks):
            r = await client.post(
                f"/api/admin/products/{product['id']}/items",
                json={"size": 250 + 5 * n, "color": "Black", "stock": stock},
                headers=admin,
            )
            assert r.status_code == 201, r.text
            items.append(r.json())
        return product, items

    async def order(
        self,
        client: httpx.AsyncClient,
        buyer: Buyer,
        lines: list[tuple[str, int]] | None = None,
        *,
        idem: str | None = None,
        from_cart: bool = False,
    ) -> httpx.Response:
        body: dict[str, Any] = (
            {"from_cart": True}
            if from_cart
            else {"lines": [{"item_id": i, "quantity": q} for i, q in lines or []]}
        )
        return await client.post(
            "/api/orders", json=body, headers={**buyer.auth, "Idempotency-Key": idem or key()}
        )

    async def ledger(self, item_id: str) -> dict[str, int]:
        async with self.products_db.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT initial, sold, reserved, available FROM items WHERE id = :i"),
                    {"i": item_id},
                )
            ).one()
        return {"initial": row[0], "sold": row[1], "reserved": row[2], "available": row[3]}

    async def reservations_of(self, buyer_id: str) -> list[dict[str, Any]]:
        async with self.products_db.connect() as conn:
            rows = await conn.execute(
                text("SELECT id, state FROM reservations WHERE buyer_id = :b"), {"b": buyer_id}
            )
            return [dict(r._mapping) for r in rows]

    async def orders_of(self, buyer_id: str) -> list[dict[str, Any]]:
        async with self.orders_db.connect() as conn:
            rows = await conn.execute(
                text("SELECT * FROM orders WHERE buyer_id = :b ORDER BY created_at"),
                {"b": buyer_id},
            )
            return [dict(r._mapping) for r in rows]

    async def order_row(self, order_id: str) -> dict[str, Any]:
        async with self.orders_db.connect() as conn:
            row = (
                await conn.execute(text("SELECT * FROM orders WHERE id = :i"), {"i": order_id})
            ).one()
            return dict(row._mapping)

    async def history(self, order_id: str) -> list[str]:
        async with self.orders_db.connect() as conn:
            rows = await conn.execute(
                text("SELECT status FROM order_history WHERE order_id = :i ORDER BY id"),
                {"i": order_id},
            )
            return [r[0] for r in rows]

    async def outbox(self, order_id: str) -> list[str]:
        """Routing keys of the events written for an order, in order."""
        async with self.orders_db.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT routing_key FROM outbox "
                    "WHERE JSON_UNQUOTE(JSON_EXTRACT(body, '$.order_id')) = :i ORDER BY id"
                ),
                {"i": order_id},
            )
            return [r[0] for r in rows]

    async def publish(self, events: list[Event]) -> None:
        """Publish events onto the platform's exchange, as the payments relay would."""
        connection = await aio_pika.connect(self.settings.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(exchange_name(self.settings))
            for event in events:
                await exchange.publish(
                    aio_pika.Message(
                        orjson.dumps(event.to_message()),
                        message_id=event.event_id,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=event.routing_key(),
                )


def assert_problem(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code, body
    return body
