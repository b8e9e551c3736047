"""A buyer's browser at the sandbox payment window, as far as the tests need one: open the
page, read its form as a browser would (action resolved against the page URL, every input's
value), submit it, and read where the answer sends the buyer."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import httpx

STORE_OK = "https://shop.example/pay/success?cart=7"
STORE_FAIL = "http://127.0.0.1:9/pay/fail?from=pg"


def window_params(order_id: str, amount: int = 189000, **extra: Any) -> dict[str, Any]:
    return {
        "orderId": order_id,
        "amount": amount,
        "orderName": "에어 맥스 1 <한정판> & Co",
        "successUrl": STORE_OK,
        "failUrl": STORE_FAIL,
        **extra,
    }


@dataclass
class Form:
    action: str = ""
    method: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # for= -> label text


class _FormReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.form = Form()
        self._label: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.form.action, self.form.method = a.get("action", ""), a.get("method", "")
        elif tag == "input" and a.get("name"):
            self.form.fields[a["name"]] = a.get("value", "")
        elif tag == "label":
            self._label = a.get("for", "")
            self.form.labels[self._label] = ""

    def handle_data(self, data: str) -> None:
        if self._label is not None:
            self.form.labels[self._label] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._label = None


def read_form(html: str) -> Form:
    reader = _FormReader()
    reader.feed(html)
    return reader.form


async def open_window(client: httpx.AsyncClient, path: str, params: dict[str, Any]) -> Form:
    r = await client.get(path, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    form = read_form(r.text)
    form.action = urljoin(str(r.url), form.action)
    return form


async def submit(
    client: httpx.AsyncClient, form: Form, card: str = "4330123412340000", **changes: str
) -> httpx.Response:
    """Post the form as a browser does (``changes`` as a buyer editing the page would make)."""
    data = {**form.fields, "cardNumber": card, "action": "pay", **changes}
    return await client.post(form.action, data=data, follow_redirects=False)


def redirected(r: httpx.Response, to: str) -> dict[str, str]:
    """The 303 answer's target: ``to`` with its own query kept and the PG's appended."""
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    base = urlsplit(to)
    got = urlsplit(location)
    assert (got.scheme, got.netloc, got.path) == (base.scheme, base.netloc, base.path), location
    assert got.query.startswith(base.query + "&"), location
    return dict(parse_qsl(got.query[len(base.query) + 1 :], strict_parsing=True))
