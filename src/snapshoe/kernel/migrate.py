"""Alembic migrations per service, run programmatically.

Each service has ``migrations/`` (``env.py`` + ``versions/``) whose ``env.py`` only calls
:func:`run_env` with its metadata. ``snapshoe migrate`` creates the service databases and
upgrades each to head.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from snapshoe.kernel.db import ensure_database
from snapshoe.kernel.settings import Settings


def alembic_config(settings: Settings, service: str) -> Config:
    cfg = Config()
    location = resources.files(f"snapshoe.{service}") / "migrations"
    cfg.set_main_option("script_location", str(location))
    cfg.set_main_option("sqlalchemy.url", settings.database_url(service).replace("%", "%%"))
    return cfg


def run_env(target_metadata: MetaData) -> None:
    """Body of every service's ``migrations/env.py``."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set by alembic_config()"
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    def do_run(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        async with engine.connect() as conn:
            await conn.run_sync(do_run)
        await engine.dispose()

    asyncio.run(run_async())


async def migrate_service(settings: Settings, service: str) -> None:
    await ensure_database(settings, service)
    cfg = alembic_config(settings, service)
    # MySQL ignores names of PRIMARY KEY constraints and says so once per table; not news.
    logging.getLogger("asyncmy").setLevel(logging.ERROR)
    # Alembic's env.py runs its own event loop; keep it off ours.
    await asyncio.to_thread(command.upgrade, cfg, "head")
