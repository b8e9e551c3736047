"""No naive datetime crosses the users service's boundary (issue 13, item 6): what the
repository reads is aware UTC (``kernel.db.UtcDateTime``), whatever the column stores."""

from __future__ import annotations

from datetime import UTC, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.support.platform import Platform

from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.db import create_sessions
from snapshoe.users import repository as repo
from snapshoe.users.domain import hash_refresh_token


async def test_rows_read_through_the_repository_are_aware_utc(
    users_platform: Platform, direct: httpx.AsyncClient, users_db: AsyncEngine
) -> None:
    buyer = await users_platform.verified_user(direct)
    async with create_sessions(users_db)() as session:
        row = await repo.refresh_by_hash(session, hash_refresh_token(buyer.refresh_token))
    assert row is not None
    assert row.expires_at.tzinfo is UTC
    # Comparable with the code's clock (a naive value would raise TypeError here).
    assert utcnow() < row.expires_at < utcnow() + timedelta(days=400)
