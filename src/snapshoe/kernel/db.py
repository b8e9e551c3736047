"""Async SQLAlchemy engine per service, each with its own database (``<namespace>_<service>``).

One transaction per command: handlers open ``async with sessions.begin() as session`` and
repositories take that session; repositories never commit.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from snapshoe.kernel.settings import Settings

Sessions = async_sessionmaker[AsyncSession]


def create_engine(settings: Settings, service: str, *, pool_size: int | None = None) -> AsyncEngine:
    return create_async_engine(
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
