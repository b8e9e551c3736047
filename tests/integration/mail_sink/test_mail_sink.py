"""The mail sink: real SMTP in (aiosmtplib), the HTTP API out (a real uvicorn server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email.message import EmailMessage

import aiosmtplib
import httpx
import pytest
import uvicorn
from tests.support.net import free_port

from snapshoe.kernel.settings import Settings
from snapshoe.mail_sink.bootstrap import create_app
from snapshoe.mail_sink.domain import MailStore, parse_message


@pytest.fixture(scope="module")
async def sink() -> AsyncIterator[Settings]:
    settings = Settings(mail_sink_smtp_port=free_port(), mail_sink_http_port=free_port())
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=settings.mail_sink_http_port,
            log_level="warning",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    yield settings
    server.should_exit = True
    await task
    # The lifespan stopped the SMTP server with the app.
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await aiosmtplib.SMTP(
            hostname="127.0.0.1", port=settings.mail_sink_smtp_port, timeout=2
        ).connect()


@pytest.fixture
async def api(sink: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sink.service_url("mail_sink"), timeout=10) as client:
        r = await client.delete("/api/messages")
        assert r.status_code == 200
        yield client


def message(to: str, subject: str, text: str, html: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "SnapShoe <no-reply@snapshoe.local>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg


async def send(settings: Settings, msg: EmailMessage, **kw: object) -> None:
    await aiosmtplib.send(msg, hostname="127.0.0.1", port=settings.mail_sink_smtp_port, **kw)  # type: ignore[arg-type]


async def test_a_real_smtp_message_is_readable_over_http(
    sink: Settings, api: httpx.AsyncClient
) -> None:
    await send(
        sink,
        message(
            "Buyer@Example.com",
            "Your SnapShoe code: 123456 — 인증 코드",
            "Your code is 123456.\nIt expires in 10 minutes. 감사합니다",
            "<p>Your code is <b>123456</b></p>",
        ),
    )
    r = await api.get("/api/messages", params={"to": "buyer@example.COM"})
    assert r.status_code == 200
    [m] = r.json()
    assert m["to"] == "Buyer@Example.com"
    assert m["subject"] == "Your SnapShoe code: 123456 — 인증 코드"  # RFC 2047 decoded
    assert m["body"] == "Your code is 123456.\nIt expires in 10 minutes. 감사합니다\n"
    assert "<b>123456</b>" in m["html"]
    assert m["from"] == "no-reply@snapshoe.local"
    assert m["received_at"].endswith("Z")


async def test_newest_first_filtered_by_recipient_and_cleared(
    sink: Settings, api: httpx.AsyncClient
) -> None:
    for i in range(3):
        await send(sink, message("a@example.com", f"a{i}", f"body {i}"))
    await send(sink, message("b@example.com", "b0", "other"))
    a = (await api.get("/api/messages", params={"to": "a@example.com"})).json()
    assert [m["subject"] for m in a] == ["a2", "a1", "a0"]
    every = (await api.get("/api/messages")).json()
    assert [m["subject"] for m in every] == ["b0", "a2", "a1", "a0"]
    assert (await api.get("/api/messages", params={"to": "nobody@example.com"})).json() == []
    assert (await api.delete("/api/messages")).json() == {"deleted": 4}
    assert (await api.get("/api/messages")).json() == []


async def test_one_entry_per_envelope_recipient_including_bcc(
    sink: Settings, api: httpx.AsyncClient
) -> None:
    await send(
        sink,
        message("to@example.com", "hello", "hi"),
        recipients=["to@example.com", "hidden@example.com"],
    )
    hidden = (await api.get("/api/messages", params={"to": "hidden@example.com"})).json()
    assert [m["subject"] for m in hidden] == ["hello"]


async def test_concurrent_senders_lose_nothing(sink: Settings, api: httpx.AsyncClient) -> None:
    await asyncio.gather(
        *(send(sink, message(f"c{i}@example.com", f"s{i}", f"code {i:06d}")) for i in range(100))
    )
    every = (await api.get("/api/messages")).json()
    assert sorted(m["subject"] for m in every) == sorted(f"s{i}" for i in range(100))


async def test_html_inbox_escapes_content(sink: Settings, api: httpx.AsyncClient) -> None:
    await send(sink, message("x@example.com", "<script>alert(1)</script>", "<b>hi</b>"))
    page = await api.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>" not in page.text


async def test_health_and_bad_query(sink: Settings, api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json()["status"] == "ok"
    r = await api.get("/api/messages", params={"to": "x" * 400})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"


def test_store_is_bounded_and_keeps_the_newest() -> None:
    store = MailStore(capacity=3)
    for i in range(5):
        store.add(parse_message(f"Subject: m{i}\r\n\r\nbody".encode(), ["x@example.com"], "f@x"))
    assert [m.subject for m in store.list()] == ["m4", "m3", "m2"]
    assert len(store) == 3


def test_html_only_message_body_falls_back_to_html() -> None:
    raw = b"Subject: h\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>only html</p>"
    [m] = parse_message(raw, ["x@example.com"], "f@x")
    assert m.body == "<p>only html</p>"
    assert m.html == "<p>only html</p>"
