"""argon2id hashing in a worker thread, so the event loop keeps serving (~0.1 s of CPU)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snapshoe.users.deps import Deps

log = logging.getLogger("snapshoe.users")


async def hash_password(deps: Deps, password: str) -> str:
    return await asyncio.to_thread(deps.hasher.hash, password)


async def verify_password(deps: Deps, password: str, password_hash: str) -> bool:
    return await asyncio.to_thread(deps.hasher.verify, password, password_hash)
