"""Async SQLAlchemy engine per service, each with its own database (``<namespace>_<service>``).

One transaction per command: handlers open ``async with sessions.begin() as session`` and
repositories take that session; repositories never commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, event, text
from sqlalchemy.dialects.mysql import DATETIME
from sqlalchemy.ext import asyncio as sa_asyncio
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.types import TypeDecorator

from snapshoe.kernel import tracing
from snapshoe.kernel.clock import as_utc, to_db
from snapshoe.kernel.settings import Settings

Sessions = async_sessionmaker[AsyncSession]


class UtcDateTime(TypeDecorator[datetime]):
    """``DATETIME(6)`` holding UTC: aware datetimes in, aware UTC out. The one place where a
    naive datetime is made or read, so none reaches the code above the repositories."""

    impl = DATETIME(fsp=6)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else to_db(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)


def ts_column(name: str, *, nullable: bool = False, **kw: Any) -> Column[datetime]:
    """A timestamp column of any service's table."""
    return Column(name, UtcDateTime(), nullable=nullable, **kw)


def create_engine(settings: Settings, service: str, *, pool_size: int | None = None) -> AsyncEngine:
    # Through the module: tracing's instrumentation wraps the function there.
    engine = sa_asyncio.create_async_engine(
        settings.database_url(service),
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        pool_recycle=3600,
        echo=settings.db_echo,
        # READ COMMITTED: conditional updates see the latest committed row, and gap locks
        # of REPEATABLE READ don't serialize unrelated inserts under a drop.
        isolation_level="READ COMMITTED",
    )
    event.listen(engine.sync_engine, "do_connect", connect_or_disconnect)
    tracing.instrument_engine(engine)
    return engine


# asyncmy raises a bare RuntimeError when the server closes the socket during the connect
# (its keep-alive option set on a transport already gone: MariaDB shutting down, issue 18's
# fault runs), which no handler knows as an outage: a 500 instead of a 503 to retry.
_GONE_DURING_CONNECT = "Transport does not expose socket instance"
CR_SERVER_LOST = 2013


def connect_or_disconnect(dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> Any:
    """The driver's connect, with that RuntimeError said as the disconnect it is (the
    driver's OperationalError 2013, which SQLAlchemy wraps and the platform answers 503)."""
    try:
        return dialect.connect(*cargs, **cparams)
    except RuntimeError as exc:
        if _GONE_DURING_CONNECT not in str(exc):
            raise
        raise dialect.loaded_dbapi.OperationalError(
            CR_SERVER_LOST, f"Lost connection to server during connect ({exc})"
        ) from exc


def create_sessions(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ensure_database(settings: Settings, service: str) -> None:
    engine = create_async_engine(settings.server_url(), pool_size=1)
    try:
        async with engine.begin() as conn:
            name = settings.database_name(service)
            await conn.execute(
                text(
                    f"CREATE DATABASE IF NOT EXISTS `{name}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )
            )
    finally:
        await engine.dispose()


async def drop_database(settings: Settings, service: str) -> None:
    engine = create_async_engine(settings.server_url(), pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP DATABASE IF EXISTS `{settings.database_name(service)}`"))
    finally:
        await engine.dispose()


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
