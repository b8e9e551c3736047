"""Which consumer failures are transient (retried in-process, no delivery spent) and which are
poison (requeued towards the DLQ). Pure: exceptions built by hand, as the drivers raise them."""

from __future__ import annotations

import random

import aiohttp
import pytest
from pydantic import BaseModel, ValidationError
from redis.exceptions import BusyLoadingError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from snapshoe.kernel.messaging import is_transient, retry_delay


def _op(code: int, msg: str = "") -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception(code, msg))


class _M(BaseModel):
    n: int


def _validation_error() -> ValidationError:
    try:
        _M.model_validate({"n": "x"})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "exc",
    [
        _op(2003, "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] refused)"),
        _op(2013, "Lost connection to MySQL server during query"),
        _op(2006, "MySQL server has gone away"),
        _op(1053, "Server shutdown in progress"),
        _op(1213, "Deadlock found when trying to get lock"),
        _op(1205, "Lock wait timeout exceeded"),
        _op(4031, "The client was disconnected by the server because of inactivity"),
        InterfaceError("SELECT 1", {}, Exception(0, "Not connected")),
        InterfaceError("SELECT 1", {}, Exception("connection closed")),
        DBAPIError("SELECT 1", {}, Exception("boom"), connection_invalidated=True),
        OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "refused")),
        PoolTimeout("QueuePool limit of size 5 overflow 0 reached"),
        RedisConnectionError("Error 111 connecting to 127.0.0.1:6379"),
        RedisTimeout("Timeout reading from socket"),
        BusyLoadingError("Redis is loading the dataset in memory"),
        ConnectionResetError(104, "Connection reset by peer"),
        OSError(113, "No route to host"),
        TimeoutError(),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientConnectionError("refused"),
        aiohttp.SocketTimeoutError("read timeout"),
        aiohttp.ClientPayloadError("Response payload is not completed"),
    ],
    ids=lambda e: f"{type(e).__name__}:{str(e)[:40]}",
)
def test_backend_outages_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


def test_a_wrapped_outage_is_transient() -> None:
    outer = RuntimeError("handler gave up")
    outer.__cause__ = _op(2013, "Lost connection")
    assert is_transient(outer)


@pytest.mark.parametrize(
    "exc",
    [
        _op(1054, "Unknown column 'x' in 'field list'"),  # a bug, though an OperationalError
        _op(1406, "Data too long for column 'reason'"),
        IntegrityError("INSERT", {}, Exception(1452, "a foreign key constraint fails")),
        OperationalError("SELECT 1", {}, Exception("no code at all")),
        _validation_error(),
        KeyError("order_id"),
        ValueError("event without event_id"),
        RuntimeError("always fails"),
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    ],
    ids=lambda e: f"{type(e).__name__}:{str(e)[:40]}",
)
def test_poison_is_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_retry_delay_grows_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    delays = [retry_delay(n, 0.2, 5.0, rng) for n in range(12)]
    assert 0.1 <= delays[0] <= 0.2
    assert 0.4 <= delays[2] <= 0.8
    assert all(2.5 <= d <= 5.0 for d in delays[5:])  # capped
    assert len({round(d, 6) for d in delays[5:]}) > 1  # jittered, not all equal
