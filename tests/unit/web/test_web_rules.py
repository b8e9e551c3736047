"""Pure rules of the web tier: both languages say everything, every API error code has words,
redirect targets stay on this site, the console's forms become the API's bodies."""

from __future__ import annotations

import pytest

from snapshoe.web.console import product_body
from snapshoe.web.i18n import EN, ERROR_KEYS, KO, error_words, pick_lang
from snapshoe.web.pages import local_path
from snapshoe.web.views import iso, kst, kst_local


def test_both_languages_have_every_key_and_no_empty_text() -> None:
    assert set(KO) == set(EN)
    assert all(v.strip() for v in (*KO.values(), *EN.values()))


def test_every_stable_error_code_has_words_and_an_unknown_one_a_generic_sentence() -> None:
    for code in ERROR_KEYS:
        assert f"err_{code}" in KO, code
    assert error_words("ko", "sold_out") == "품절되었습니다."
    assert error_words("en", "sold_out") == "Sold out."
    assert error_words("ko", "some_new_code") == KO["error_generic"]
    assert "409" not in error_words("en", "http_409")


def test_korean_unless_the_buyer_chose_english() -> None:
    assert pick_lang(None) == "ko"
    assert pick_lang("en") == "en"
    assert pick_lang("fr") == "ko"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/orders", "/orders"),
        ("/products/1?x=2", "/products/1?x=2"),
        ("//evil.example/x", "/"),
        ("https://evil.example", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_a_redirect_target_is_a_path_on_this_site(given: str | None, expected: str) -> None:
    assert local_path(given) == expected


def test_the_product_form_becomes_the_api_body_with_kst_times() -> None:
    body = product_body(
        {
            "name": " Air ",
            "brand": "Nike",
            "description": "",
            "price": "199000",
            "per_user_limit": "1",
            "sale_mode": "queue",
            "release_at": "2026-12-24T18:00",
            "queue_opens_at": "2026-12-24T17:45",
            "admission_seconds": "",
            "draw_at": "not a time",
        }
    )
    assert body == {
        "name": "Air",
        "brand": "Nike",
        "description": "",
        "price": 199000,
        "per_user_limit": 1,
        "sale_mode": "queue",
        "release_at": "2026-12-24T18:00:00+09:00",
        "queue_opens_at": "2026-12-24T17:45:00+09:00",
    }
    assert product_body({"sale_mode": "auction", "price": "-5"}) == {}


def test_times_are_shown_in_korea_time_and_round_trip() -> None:
    assert kst("2026-12-24T09:00:00Z") == "2026-12-24 18:00 KST"
    assert kst_local("2026-12-24T09:00:00Z") == "2026-12-24T18:00"
    assert iso("2026-12-24T18:00:00+09:00") == "2026-12-24T09:00:00Z"
    assert kst(None) == ""
