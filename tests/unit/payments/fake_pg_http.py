"""A fake of the aiohttp session the PG adapter sends through: answers from a list (or a
function) and records every request, without a socket. aiohttp has no mock transport, so this
stands in for ``aiohttp.ClientSession`` where the adapter uses it (``request`` as an async
context manager, the answer's ``status``, ``headers`` and ``read()``); the integration tests
(tests/integration/payments/test_pg_adapter*.py) prove the same paths against a real server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import orjson
from aiohttp.client_reqrep import ConnectionKey
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL


@dataclass(frozen=True)
class Sent:
    """One request as the adapter sent it."""

    method: str
    url: URL
    headers: CIMultiDictProxy[str]
    content: bytes
    timeout: aiohttp.ClientTimeout | None


@dataclass(frozen=True)
class Answer:
    status: int
    content: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.content.decode()


def answer(
    status: int,
    json: Any = None,
    *,
    text: str | None = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    if json is not None:
        body = orjson.dumps(json)
    elif text is not None:
        body = text.encode()
    else:
        body = content or b""
    return Answer(status, body, headers or {})


Handler = Callable[[Sent], Answer]


class _Response:
    def __init__(self, a: Answer) -> None:
        self.status = a.status
        self.headers = CIMultiDictProxy(CIMultiDict(a.headers))
        self._content = a.content

    async def read(self) -> bytes:
        return self._content


class FakeSession:
    """Answers each request with the next of ``answers`` (the last one repeats); an exception
    is raised as aiohttp would raise it, a function is called with the request."""

    def __init__(self, *answers: Answer | BaseException | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[Sent] = []
        self.closed = False

    @asynccontextmanager
    async def _request(self, method: str, url: Any, **kw: Any) -> AsyncIterator[_Response]:
        data = kw.get("data") or b""
        if "json" in kw:
            data = orjson.dumps(kw["json"])
        sent = Sent(
            method,
            URL(url) if isinstance(url, str) else url,
            CIMultiDictProxy(CIMultiDict(kw.get("headers") or {})),
            bytes(data),
            kw.get("timeout"),
        )
        self.requests.append(sent)
        a = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(a, BaseException):
            raise a
        yield _Response(a if isinstance(a, Answer) else a(sent))

    def request(self, method: str, url: Any, **kw: Any) -> Any:
        return self._request(method, url, **kw)

    def post(self, url: Any, **kw: Any) -> Any:
        return self._request("POST", url, **kw)

    async def close(self) -> None:
        self.closed = True

    def session(self) -> aiohttp.ClientSession:
        """This fake, typed as what the adapter takes."""
        return cast(aiohttp.ClientSession, self)


def connect_error(message: str = "refused") -> aiohttp.ClientConnectorError:
    """What aiohttp raises when no connection could be made (the request never left)."""
    key = ConnectionKey("pg.test", 443, True, True, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, message))
