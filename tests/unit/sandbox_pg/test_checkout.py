"""The payment window's pure rules: URL checks, the CSP origins, the signature, the redirects."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapshoe.sandbox_pg import checkout
from snapshoe.sandbox_pg.checkout import Window, WindowError

SECRET = "test_sk_unit"


BASE = Window(
    "ord_123456",
    189000,
    "Air Max 1",
    "https://shop.example/ok?cart=7",
    "http://localhost:8080/fail",
)


def window(**changes: Any) -> Window:
    return dataclasses.replace(BASE, **changes)


def test_a_redirect_keeps_the_store_query_and_encodes_the_values() -> None:
    url = checkout.with_query(
        "https://shop.example/ok?a=1&b=%2F#top", [("message", "카드 오류 & 50%"), ("x", "a/b")]
    )
    assert url == (
        "https://shop.example/ok?a=1&b=%2F&message=%EC%B9%B4%EB%93%9C%20%EC%98%A4%EB%A5%98"
        "%20%26%2050%25&x=a%2Fb#top"
    )
    assert checkout.with_query("http://h:8080", [("k", "v")]) == "http://h:8080?k=v"


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.example/ok",
        "http://127.0.0.1:8000/pay/ok?x=%20y",
        "HTTPS://Shop.Example/OK",
        "https://user@shop.example/",
    ],
)
def test_absolute_http_urls_of_any_host_are_accepted(url: str) -> None:
    assert checkout.check_url(url, "successUrl") == url


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "data:,x", "//a.example/", "/ok", "https://a_b.example/", "http://"],
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(WindowError):
        checkout.check_url(url, "successUrl")


def test_the_origins_are_what_csp_form_action_names() -> None:
    assert window().origins() == ["https://shop.example", "http://localhost:8080"]
    same = window(fail_url="https://SHOP.example/fail")
    assert same.origins() == ["https://shop.example"]


def test_the_signature_covers_every_field() -> None:
    base = checkout.sign(SECRET, window())
    assert base == checkout.sign(SECRET, window())
    assert checkout.sign("another secret", window()) != base
    for change in [
        {"order_id": "ord_654321"},
        {"amount": 189001},
        {"order_name": "Air Max 90"},
        {"success_url": "https://shop.example/ok?cart=8"},
        {"fail_url": "http://localhost:8080/fail2"},
    ]:
        assert checkout.sign(SECRET, window(**change)) != base, change


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_moving_text_between_the_urls_changes_the_signature(a: str, b: str) -> None:
    one = window(success_url=a + "|" + b, fail_url=b)
    other = window(success_url=a, fail_url=b + "|" + b)
    assert checkout.sign(SECRET, one) != checkout.sign(SECRET, other)


def test_a_form_is_read_back_only_with_its_signature() -> None:
    w = window()
    fields = {**w.form_fields(), "signature": checkout.sign(SECRET, w)}
    assert checkout.read_form(SECRET, fields) == w
    with pytest.raises(WindowError):
        checkout.read_form(SECRET, {**fields, "amount": "1000"})
    with pytest.raises(WindowError):
        checkout.read_form("another secret", fields)


def test_a_field_given_twice_is_refused_and_others_ignored() -> None:
    assert checkout.single_values([("x", "1"), ("x", "2"), ("orderId", "o")]) == {
        "x": "1",
        "orderId": "o",
    }
    with pytest.raises(WindowError):
        checkout.single_values([("amount", "1"), ("amount", "2")])
    with pytest.raises(WindowError):
        checkout.decode_form(b"\xff")
    with pytest.raises(WindowError):
        checkout.decode_form(b"&".join(b"f%d=1" % n for n in range(50)))
