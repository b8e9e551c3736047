"""The draw result mail's text (users.draw_mail.draw_result_mail), per state and language:
the buyer's language only (Korean by default, or English), plain text, the state's own facts,
and how to check the draw; and the worker's side of a queued job (what the consumer queues is
what the worker mails, in the language the job names)."""

from __future__ import annotations

import re
from typing import Any, Literal

import orjson
import pytest

from snapshoe.kernel.contracts.draws import DrawEntryDecided
from snapshoe.users.draw_mail import DRAW_RESULT, draw_result_mail, send_draw_result
from snapshoe.users.mail import Mailer

SEED = "5e" * 32
COMMITMENT = "c0" * 32
HANGUL = re.compile("[\uac00-\ud7a3]")


def decided(
    state: Literal["won", "lost", "payment_failed"], *, order_id: str | None = None
) -> DrawEntryDecided:
    return DrawEntryDecided(
        entry_id="entry-1",
        product_id="prod-42",
        product_name="Jordan 1 Retro High",
        buyer_id="buyer-1",
        item_id="item-270",
        size=270,
        state=state,
        order_id=order_id,
        seed=SEED,
        commitment=COMMITMENT,
    )


def assert_common(subject: str, body: str, lang: str) -> None:
    assert "Jordan 1 Retro High" in subject
    assert "\n" not in subject
    if lang == "ko":
        assert subject.startswith("[SnapShoe] 드로우 ")
        assert body.startswith("김민준님, 안녕하세요.")
        assert "Hello" not in body
    else:
        assert subject.startswith("[SnapShoe] Draw result: ")
        assert body.startswith("Hello 김민준,")
        # English only: no Hangul but the buyer's own name.
        assert not HANGUL.search(body.replace("김민준", ""))
        assert not HANGUL.search(subject)
    # Plain text: no markup.
    assert "<" not in body
    assert ">" not in body
    assert "Jordan 1 Retro High" in body
    assert "270" in body
    assert SEED in body
    assert COMMITMENT in body
    assert "entry-1" in body
    assert "GET /api/products/prod-42/draw" in body
    assert "snapshoe draws verify prod-42" in body


def test_won_says_size_charge_order_and_preparing() -> None:
    event = decided("won", order_id="order-9")
    subject, korean = draw_result_mail(event, "김민준")  # Korean unless told
    assert_common(subject, korean, "ko")
    assert subject == "[SnapShoe] 드로우 당첨: Jordan 1 Retro High"
    assert "당첨되셨습니다" in korean
    assert "결제되었습니다" in korean
    assert "주문 번호: order-9" in korean
    assert "준비중 (PREPARING)" in korean
    subject, english = draw_result_mail(event, "김민준", "en")
    assert_common(subject, english, "en")
    assert subject == "[SnapShoe] Draw result: you won Jordan 1 Retro High"
    assert "You won the draw for Jordan 1 Retro High." in english
    assert "- Size: 270" in english
    assert "Your card has been charged." in english
    assert "- Order: order-9" in english
    assert "PREPARING" in english
    assert "Nothing was charged" not in english


def test_lost_says_not_drawn_and_nothing_charged() -> None:
    subject, korean = draw_result_mail(decided("lost"), "김민준", "ko")
    assert_common(subject, korean, "ko")
    assert "미당첨" in subject
    assert "당첨되지 않으셨습니다" in korean
    assert "결제된 금액은 없습니다" in korean
    subject, english = draw_result_mail(decided("lost"), "김민준", "en")
    assert_common(subject, english, "en")
    assert "not drawn" in subject
    assert "You were not drawn this time for Jordan 1 Retro High." in english
    assert "Nothing was charged." in english
    assert "Order" not in english
    for body in (korean, english):
        assert "PREPARING" not in body
        assert "declined" not in body


def test_payment_failed_says_declined_nothing_charged_pair_passed_on() -> None:
    subject, korean = draw_result_mail(decided("payment_failed"), "김민준", "ko")
    assert_common(subject, korean, "ko")
    assert "결제 실패" in subject
    assert "결제가 거절되었습니다" in korean
    assert "결제된 금액은 없습니다" in korean
    assert "다음 순번의 응모자" in korean
    subject, english = draw_result_mail(decided("payment_failed"), "김민준", "en")
    assert_common(subject, english, "en")
    assert "payment declined" in subject
    assert "the charge to your card was declined" in english
    assert "Nothing was charged." in english
    assert "The pair went to the next entrant." in english
    assert "PREPARING" not in korean + english


def test_a_newline_in_a_name_never_reaches_the_subject() -> None:
    event = decided("lost").model_copy(update={"product_name": "Dunk\r\nBcc: x@evil.test"})
    for lang in ("ko", "en"):
        subject, _ = draw_result_mail(event, "Kim\nMinjun", lang)  # type: ignore[arg-type]
        assert "\n" not in subject
        assert "\r" not in subject
        assert "Dunk Bcc: x@evil.test" in subject
    _, body = draw_result_mail(event, "Kim\nMinjun", "en")
    assert "Hello Kim Minjun," in body
    # No name on the account: the greeting goes without one.
    _, body = draw_result_mail(event, "")
    assert body.startswith("안녕하세요.\n")
    _, body = draw_result_mail(event, "", "en")
    assert body.startswith("Hello,\n")


class FakeMailer(Mailer):
    def __init__(self, ok: bool = True) -> None:
        self.sent: list[tuple[str, str, str]] = []
        self.ok = ok

    async def send(self, to: str, subject: str, body: str) -> bool:
        self.sent.append((to, subject, body))
        return self.ok


def job_of(event: DrawEntryDecided, lang: str | None = None) -> dict[str, Any]:
    """The job as the consumer queues it, through the stream's JSON (``lang`` None: a job
    queued before the account had a language)."""
    job: dict[str, Any] = {"kind": DRAW_RESULT, "to": "b@example.com", "name": "김민준"}
    if lang is not None:
        job["lang"] = lang
    job["draw"] = event.model_dump(mode="json")
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(job))
    return loaded


@pytest.mark.parametrize("ok", [True, False])
async def test_the_worker_mails_the_queued_job_and_reports_the_send(ok: bool) -> None:
    event = decided("won", order_id="order-9")
    mailer = FakeMailer(ok)
    assert await send_draw_result(mailer, job_of(event, "en")) is ok  # False: retried later
    assert await send_draw_result(mailer, job_of(event)) is ok
    assert mailer.sent == [
        ("b@example.com", *draw_result_mail(event, "김민준", "en")),
        ("b@example.com", *draw_result_mail(event, "김민준", "ko")),
    ]


async def test_an_undecodable_job_is_dropped_not_retried() -> None:
    mailer = FakeMailer()
    job = job_of(decided("lost"))
    job["draw"]["state"] = "maybe"
    assert await send_draw_result(mailer, job) is True
    assert await send_draw_result(mailer, {"kind": DRAW_RESULT, "to": "x@example.com"}) is True
    assert mailer.sent == []
