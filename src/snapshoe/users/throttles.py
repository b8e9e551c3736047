"""The per-address and per-client counters and throttles of the account endpoints (Redis,
fixed windows that always end), and the 429 answers they give (docs/users-throttles.md)."""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

from snapshoe.kernel.errors import Problem
from snapshoe.kernel.redis import key
from snapshoe.kernel.settings import Settings
from snapshoe.users.domain import (
    CodeOutcome,
)

if TYPE_CHECKING:
    from snapshoe.users.deps import Deps

log = logging.getLogger("snapshoe.users")


def email_key(settings: Settings, purpose: str, email: str) -> str:
    """Redis key of a per-address counter or throttle (``mail``: the resend interval;
    ``mail_hour``: sign-up and resend mails per hour; ``code_tries``: wrong codes across
    resends; ``login_tries``: login attempts). Hashed so addresses do not sit in key names
    in the clear."""
    digest = hashlib.sha256(email.encode()).hexdigest()[:40]
    return key(settings, "users", purpose, digest)


async def claim_send_slot(deps: Deps, email: str) -> bool:
    """True if no mail went to this address within the resend interval (and claims it)."""
    claimed = await deps.redis.set(
        email_key(deps.settings, "mail", email),
        "1",
        nx=True,
        ex=deps.settings.verification_resend_interval_seconds,
    )
    return bool(claimed)


async def bump_counters(deps: Deps, *counters: tuple[str, int]) -> list[tuple[int, int]]:
    """Add one to each fixed-window counter ``(key, window seconds)``; returns each
    ``(count, seconds left)``. The window starts at the first count and is never extended,
    so a limit always ends (nobody is locked out for good)."""
    async with deps.redis.pipeline(transaction=True) as pipe:
        for name, window in counters:
            pipe.incr(name)
            pipe.expire(name, window, nx=True)
            pipe.ttl(name)
        out = await pipe.execute()
    return [(int(out[3 * i]), max(1, int(out[3 * i + 2]))) for i in range(len(counters))]


def too_many_requests(detail: str, retry_after: int) -> Problem:
    return Problem(
        429,
        "too_many_requests",
        "Too many requests",
        detail,
        headers={"Retry-After": str(max(1, retry_after))},
    )


async def spend_mail_budget(deps: Deps, email: str) -> None:
    """The hourly budget of sign-up and resend mails per target address (429 past it),
    counted whether or not the address is registered, so the 429 tells nothing."""
    ((n, left),) = await bump_counters(deps, (email_key(deps.settings, "mail_hour", email), 3600))
    if n > deps.settings.mails_per_address_per_hour:
        raise too_many_requests("Too many messages were sent to this address; try later", left)


async def count_miss(
    deps: Deps, email: str, purpose: str = "verify_miss", ttl_seconds: int | None = None
) -> CodeOutcome:
    """Attempt counter for an address without a live code (unknown or already verified),
    kept in Redis for one code lifetime so it behaves like a real code's counter."""
    name = email_key(deps.settings, purpose, email)
    ttl = ttl_seconds or deps.settings.verification_code_ttl_seconds
    async with deps.redis.pipeline(transaction=True) as pipe:
        pipe.incr(name)
        pipe.expire(name, ttl, nx=True)
        count, _ = await pipe.execute()
    limit = deps.settings.verification_max_attempts
    if count > limit:
        return CodeOutcome.DEAD
    return CodeOutcome.KILLED if count == limit else CodeOutcome.INVALID


def client_key(settings: Settings, purpose: str, client: str) -> str:
    digest = hashlib.sha256(client.encode()).hexdigest()[:40]
    return key(settings, "users", purpose, digest)


def too_many_attempts() -> Problem:
    return Problem(
        429,
        "too_many_attempts",
        "Too many attempts",
        "Too many wrong codes: this code no longer works; ask for a new one",
    )
