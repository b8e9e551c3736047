"""Transient or not: whether a failure says a backend is away for now (retry the same work
later) or that the work itself is wrong, and the waits between retries."""

from __future__ import annotations

import asyncio
import contextlib
import random

import aiohttp
import aiormq
import redis.exceptions
from sqlalchemy.exc import DBAPIError, InterfaceError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# MariaDB/MySQL error codes of a server that is away, restarting, overloaded or in a lock
# conflict: the same statement can succeed later. Anything else (unknown column, data too long,
# syntax...) is a bug or bad data and must not be retried forever. OperationalError alone does
# not tell them apart: PyMySQL-style drivers (asyncmy) map every unlisted code >= 1000 to it.
TRANSIENT_DB_CODES = frozenset(
    {
        1040,  # too many connections
        1053,  # server shutdown in progress
        1205,  # lock wait timeout
        1213,  # deadlock
        1317,  # query execution was interrupted
        1158,
        1159,
        1160,
        1161,  # network read/write errors and timeouts
        1927,  # connection was killed (MariaDB)
        1969,  # max_statement_time exceeded (MariaDB)
        2002,
        2003,
        2005,
        2006,
        2013,
        2014,
        2055,  # client: cannot connect / server gone / lost
        4031,  # idle client disconnected by the server (MariaDB)
    }
)
_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionError, TimeoutError (== asyncio.TimeoutError), refused sockets
    PoolTimeout,  # no pooled connection within pool_timeout
    InterfaceError,  # the DBAPI connection is unusable
    redis.exceptions.ConnectionError,  # includes BusyLoadingError
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a failover in progress
    # Another service unreachable, or the connection to it cut or timed out (aiohttp, the
    # platform's HTTP client; its connect errors are OSErrors already).
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,  # an answer cut off midway
    aiormq.exceptions.AMQPConnectionError,
)


def _db_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says a backend is away for now, not that this
    message is wrong: retrying the same message later can succeed.

    Pure: looks only at the exception chain, so it is unit-tested without servers."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError):
            if current.connection_invalidated:
                return True
            orig = current.orig
            if orig is not None:
                if isinstance(orig, _TRANSIENT_TYPES):
                    return True
                code = _db_code(orig)
                if code is not None:
                    return code in TRANSIENT_DB_CODES or (
                        isinstance(current, InterfaceError) and code < 1000
                    )
                if isinstance(current, InterfaceError):
                    return True
        elif isinstance(current, _TRANSIENT_TYPES):
            return True
        elif (code := _db_code(current)) is not None and type(current).__module__.startswith(
            ("asyncmy", "pymysql")
        ):
            return code in TRANSIENT_DB_CODES
        current = current.__cause__ or current.__context__
    return False


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with "equal jitter" (half fixed, half random; AWS
    architecture blog, "Exponential Backoff And Jitter"): consumers retrying after one outage
    spread out instead of stampeding, and none retries much sooner than planned."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return (rng or random).uniform(ceiling / 2, ceiling)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
