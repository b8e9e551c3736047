"""The draw result mail against the real platform (``snapshoe up``): ``draw.entry_decided``
events published on the real exchange the way products' relay publishes them (same encoding
and properties, ``mandatory``), consumed by the users worker's ``users.draw_mail`` queue, queued
on the account mail queue, sent by the worker to the mail sink, in the buyer's language only.
One mail per event, also across a redelivery and a crash between the queueing and the inbox
commit; an event for a buyer without a (verified) account is acked, not retried or
dead-lettered."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from typing import Any, Literal

import aio_pika
import aiormq
import httpx
import orjson
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from tests.support.platform import Platform, User
from tests.support.waiting import eventually, wait_until

from snapshoe.kernel.contracts.draws import DrawEntryDecided
from snapshoe.kernel.contracts.routing import must_route
from snapshoe.kernel.db import create_sessions
from snapshoe.kernel.messaging import exchange_name, handle_once
from snapshoe.users.consumers import DRAW_MAIL_QUEUE, draw_mail_handlers
from snapshoe.users.mail import MailQueue
from snapshoe.users.tables import inbox

SUBJECT_PREFIX = "[SnapShoe] 드로우 "
SEPARATOR = "-" * 40


@pytest.fixture(scope="module")
async def users_engine(platform: Platform) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(platform.settings.database_url("users"), pool_size=3)
    yield engine
    await engine.dispose()


@pytest.fixture
async def gw(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    async with platform.client() as client:
        yield client


@pytest.fixture
async def buyer(platform: Platform, gw: httpx.AsyncClient) -> User:
    return await platform.verified_user(gw)


def decided(
    buyer_id: str,
    state: Literal["won", "lost", "payment_failed"],
    *,
    product_name: str | None = None,
    size: int = 270,
) -> DrawEntryDecided:
    seed = secrets.token_hex(32)
    return DrawEntryDecided(
        entry_id=secrets.token_hex(8),
        product_id=secrets.token_hex(8),
        product_name=product_name or f"Draw Runner {secrets.token_hex(3)}",
        buyer_id=buyer_id,
        item_id=secrets.token_hex(8),
        size=size,
        state=state,
        order_id=secrets.token_hex(8) if state == "won" else None,
        seed=seed,
        commitment=hashlib.sha256(bytes.fromhex(seed)).hexdigest(),
    )


async def publish(platform: Platform, *events: DrawEntryDecided) -> None:
    """As kernel.relay publishes an outbox row: the body's JSON, the event id as message id,
    persistent, ``mandatory``, broker-confirmed. No queue is declared here: the publish is
    routed only because ``snapshoe migrate`` declared ``users.draw_mail`` (consumers.QUEUES)."""
    connection = await aio_pika.connect_robust(platform.settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(exchange_name(platform.settings))
        for event in events:
            body: dict[str, Any] = orjson.loads(orjson.dumps(event.to_message()))  # as stored
            result = await exchange.publish(
                aio_pika.Message(
                    orjson.dumps(body),
                    message_id=event.event_id,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    type=str(body["event_type"]),
                ),
                routing_key=event.routing_key(),
                mandatory=must_route(event.routing_key()),
            )
            # A returned message (no queue bound) is not an Ack.
            assert isinstance(result, aiormq.spec.Basic.Ack), result


async def draw_mails(platform: Platform, email: str) -> list[dict[str, Any]]:
    return [m for m in await platform.messages(email) if m["subject"].startswith(SUBJECT_PREFIX)]


async def wait_for_mails(platform: Platform, email: str, n: int) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]]:
        return await draw_mails(platform, email)

    return await eventually(probe, lambda ms: len(ms) >= n, timeout=20)


async def processed(engine: AsyncEngine, event_id: str) -> bool:
    async with engine.connect() as conn:
        consumer = (
            await conn.execute(
                text("SELECT consumer FROM inbox WHERE event_id = :e"), {"e": event_id}
            )
        ).scalar_one_or_none()
    return consumer is not None and str(consumer).endswith(DRAW_MAIL_QUEUE)


async def dead_letters(platform: Platform) -> int:
    connection = await aio_pika.connect_robust(platform.settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue(
            f"{platform.settings.namespace}.{DRAW_MAIL_QUEUE}.dlq", passive=True
        )
        count = dlq.declaration_result.message_count
    return int(count or 0)


# The mail of each result


async def test_each_result_is_mailed_in_the_buyers_language_with_how_to_check_the_draw(
    platform: Platform, gw: httpx.AsyncClient, buyer: User
) -> None:
    won = decided(buyer.id, "won", size=265)
    lost = decided(buyer.id, "lost", size=270)
    failed = decided(buyer.id, "payment_failed", size=280)
    await publish(platform, won, lost, failed)

    mails = await wait_for_mails(platform, buyer.email, 3)
    by_product = {}
    for event in (won, lost, failed):
        (mail,) = [m for m in mails if event.product_name in m["subject"]]
        by_product[event.state] = mail
        korean = mail["body"]
        assert korean.startswith("Test Buyer님, 안녕하세요.")  # Korean: the default
        assert "Hello" not in korean
        assert SEPARATOR not in korean
        assert event.product_name in korean
        assert str(event.size) in korean
        assert event.entry_id in korean
        assert event.seed in korean
        assert event.commitment in korean
        assert f"GET /api/products/{event.product_id}/draw" in korean
        assert f"snapshoe draws verify {event.product_id}" in korean

    mail = by_product["won"]
    assert mail["subject"] == f"[SnapShoe] 드로우 당첨: {won.product_name}"
    assert f"주문 번호: {won.order_id}" in mail["body"]
    assert "준비중 (PREPARING)" in mail["body"]
    assert "결제되었습니다" in mail["body"]

    mail = by_product["lost"]
    assert mail["subject"] == f"[SnapShoe] 드로우 미당첨: {lost.product_name}"
    assert "당첨되지 않으셨습니다" in mail["body"]
    assert "결제된 금액은 없습니다" in mail["body"]
    assert "PREPARING" not in mail["body"]

    mail = by_product["payment_failed"]
    assert mail["subject"] == f"[SnapShoe] 드로우 결제 실패: {failed.product_name}"
    assert "결제가 거절되었습니다" in mail["body"]
    assert "다음 순번의 응모자" in mail["body"]

    # An English account is mailed in English only.
    r = await gw.patch("/api/users/me", json={"lang": "en"}, headers=buyer.auth)
    assert r.status_code == 200, r.text
    english = decided(buyer.id, "won")
    await publish(platform, english)

    async def mail_of_english() -> list[dict[str, Any]]:
        return [m for m in await platform.messages(buyer.email) if english.entry_id in m["body"]]

    (mail,) = await eventually(mail_of_english, lambda ms: len(ms) >= 1, timeout=20)
    assert mail["subject"] == f"[SnapShoe] Draw result: you won {english.product_name}"
    assert mail["body"].startswith("Hello Test Buyer,")
    assert "Your card has been charged." in mail["body"]
    assert f"Order: {english.order_id}" in mail["body"]
    assert "님" not in mail["body"]


# Once per event


async def test_the_same_event_delivered_twice_is_mailed_once(
    platform: Platform, buyer: User, users_engine: AsyncEngine
) -> None:
    event = decided(buyer.id, "lost")
    await publish(platform, event, event)
    (mail,) = await wait_for_mails(platform, buyer.email, 1)
    assert event.product_name in mail["subject"]
    assert await processed(users_engine, event.event_id)
    await asyncio.sleep(2.0)  # a second job would be sent well within this
    assert len(await draw_mails(platform, buyer.email)) == 1


async def test_a_crash_between_queueing_and_the_inbox_commit_neither_loses_nor_doubles(
    platform: Platform, buyer: User, users_engine: AsyncEngine
) -> None:
    """The consumer's real handler queues the mail, then its transaction dies before the
    commit (no inbox row): the mail still goes out, and the redelivery queues no second one."""
    event = decided(buyer.id, "won")
    redis = Redis.from_url(platform.settings.redis_url, decode_responses=True)
    try:
        handler = draw_mail_handlers(platform.settings, MailQueue(platform.settings, redis))[
            event.routing_key()
        ]

        class Crash(Exception):
            pass

        async def crashing(session: AsyncSession, body: dict[str, Any]) -> None:
            await handler(session, body)
            raise Crash

        consumer = f"{platform.settings.namespace}.{DRAW_MAIL_QUEUE}"
        with pytest.raises(Crash):
            await handle_once(
                create_sessions(users_engine), inbox, consumer, event.to_message(), crashing
            )
    finally:
        await redis.aclose()
    assert not await processed(users_engine, event.event_id)  # rolled back

    await publish(platform, event)  # the redelivery

    async def done() -> bool:
        return await processed(users_engine, event.event_id)

    await wait_until(done, what="the redelivered event to be consumed")
    (mail,) = await wait_for_mails(platform, buyer.email, 1)
    assert mail["subject"] == f"[SnapShoe] 드로우 당첨: {event.product_name}"
    await asyncio.sleep(2.0)
    assert len(await draw_mails(platform, buyer.email)) == 1


# Buyers without a verified account


async def test_an_unknown_or_unverified_buyer_is_acked_and_blocks_nothing(
    platform: Platform, gw: httpx.AsyncClient, buyer: User, users_engine: AsyncEngine
) -> None:
    # An account that signed up and never verified its address.
    email = f"unverified-{secrets.token_hex(6)}@example.com"
    r = await gw.post(
        "/api/users", json={"email": email, "password": "correct-Horse-battery-9", "name": "U"}
    )
    assert r.status_code == 202, r.text
    async with users_engine.connect() as conn:
        unverified_id = (
            await conn.execute(text("SELECT id FROM users WHERE email = :e"), {"e": email})
        ).scalar_one()

    unknown = decided(secrets.token_hex(16), "lost")  # a deleted account, a bench entry
    unverified = decided(str(unverified_id), "won")
    known = decided(buyer.id, "payment_failed")
    await publish(platform, unknown, unverified, known)

    (mail,) = await wait_for_mails(platform, buyer.email, 1)
    assert known.product_name in mail["subject"]

    async def both_done() -> bool:
        return await processed(users_engine, unknown.event_id) and await processed(
            users_engine, unverified.event_id
        )

    # Handled and committed (so acked), not failed towards the delivery limit.
    await wait_until(both_done, what="the events without a mail to be consumed")
    await asyncio.sleep(1.0)
    assert await dead_letters(platform) == 0
    assert await draw_mails(platform, email) == []
