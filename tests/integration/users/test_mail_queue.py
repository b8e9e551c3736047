"""The account mail queue (users.mail) with the real Redis and a real SMTP server: a mail
whose send fails is retried until it goes out, exactly once; a job past its deadline is
dropped. Its own namespace and an SMTP port that is closed at first (issue 12, item 9)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from tests.support.net import free_port
from tests.support.platform import make_test_settings

from snapshoe.kernel.settings import Settings
from snapshoe.users.mail import Mailer, MailQueue, drain, queue_key


class Sink:
    def __init__(self) -> None:
        self.rcpts: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.rcpts.extend(envelope.rcpt_tos)
        return "250 OK"


@pytest.fixture
async def queue_env() -> AsyncIterator[tuple[Settings, Redis]]:
    port = free_port()
    settings = make_test_settings(
        namespace=f"mailq{secrets.token_hex(4)}", smtp_host="127.0.0.1", smtp_port=port
    )
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    yield settings, redis
    await redis.delete(queue_key(settings))
    await redis.aclose()


async def test_failed_send_is_retried_until_it_goes_out(
    queue_env: tuple[Settings, Redis],
) -> None:
    from aiosmtpd.controller import Controller

    settings, redis = queue_env
    mailer = Mailer(settings, timeout=1.0)
    attempts: list[str] = []

    async def run_job(job: dict[str, Any]) -> bool:
        attempts.append(job["to"])
        return await mailer.send(job["to"], "subject", "body")

    stop = asyncio.Event()
    task = asyncio.create_task(drain(settings, redis, run_job, stop, retry_seconds=0.3))
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=settings.smtp_port)
    try:
        queue = MailQueue(settings, redis)
        await queue.enqueue({"kind": "test", "to": "late@example.com"}, ttl_seconds=60)
        await queue.enqueue({"kind": "test", "to": "dead@example.com"}, ttl_seconds=0.2)
        # SMTP is down: the sends fail, and are tried again.
        deadline = time.monotonic() + 10
        while attempts.count("late@example.com") < 2:
            assert time.monotonic() < deadline, attempts
            await asyncio.sleep(0.05)
        assert sink.rcpts == []
        controller.start()  # SMTP is back
        deadline = time.monotonic() + 10
        while "late@example.com" not in sink.rcpts:
            assert time.monotonic() < deadline, attempts
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # no second copy once it went out
        assert sink.rcpts == ["late@example.com"]
        # The job past its deadline was given up, not sent; nothing is left in the queue.
        assert await redis.xlen(queue_key(settings)) == 0
        pending = await redis.xpending(queue_key(settings), "mailers")
        assert pending["pending"] == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        with contextlib.suppress(Exception):
            controller.stop()
