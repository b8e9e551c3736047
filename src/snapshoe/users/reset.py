"""Password reset: the code is mailed after the answer has been sent, so a known and an
unknown address take the same time; a reset revokes every session of the account."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.errors import Problem
from snapshoe.users import repository as repo
from snapshoe.users.domain import (
    CodeOutcome,
    check_code,
    issue_code,
    loose_email_key,
)
from snapshoe.users.passwords import hash_password
from snapshoe.users.tables import password_reset_codes
from snapshoe.users.throttles import (
    count_miss,
    email_key,
    too_many_attempts,
    too_many_requests,
)

if TYPE_CHECKING:
    from snapshoe.users.deps import Deps

log = logging.getLogger("snapshoe.users")


# Password reset


async def request_password_reset(deps: Deps, *, email: str) -> None:
    """``POST /api/auth/password-reset``: one request a minute per address and
    ``password_reset_daily_limit`` a day, counted whether or not the address is registered,
    so a 429 says nothing about it; then one mail-queue append for every address (the worker
    finds out whether there is an account: :func:`reset_now`)."""
    settings = deps.settings
    minute = email_key(settings, "reset_mail", email)
    if not await deps.redis.set(minute, "1", nx=True, ex=settings.password_reset_interval_seconds):
        ttl = await deps.redis.ttl(minute)
        raise too_many_requests(
            "A reset code was sent to this address recently; wait before asking again", int(ttl)
        )
    day = email_key(settings, "reset_day", email)
    async with deps.redis.pipeline(transaction=True) as pipe:
        pipe.incr(day)
        pipe.expire(day, 24 * 3600, nx=True)
        pipe.ttl(day)
        count, _, ttl = await pipe.execute()
    if int(count) > settings.password_reset_daily_limit:
        raise too_many_requests("Too many reset codes for this address today", int(ttl))
    await deps.mail_queue.enqueue(
        {"kind": "reset", "to": email}, ttl_seconds=settings.password_reset_code_ttl_seconds
    )


async def reset_now(deps: Deps, email: str) -> bool:
    """The worker's half of a reset request: a new reset code for an existing account,
    mailed. True when done (including "no such account"); False when the mail failed."""
    now = utcnow()
    ttl = deps.settings.password_reset_code_ttl_seconds
    code = issue_code(now, ttl)
    async with deps.sessions.begin() as session:
        user = await repo.user_by_email(session, email)
        if user is None:
            return True
        await repo.put_code(
            session,
            user_id=user.id,
            code_hash=code.code_hash,
            salt=code.salt,
            expires_at=code.expires_at,
            now=now,
            table=password_reset_codes,
        )
    return await deps.mailer.send_reset_code(email, code.code, ttl)


async def confirm_password_reset(deps: Deps, *, email: str, code: str, new_password: str) -> None:
    """Set a new password with a mailed code. On success every refresh family of the account
    is revoked (each session ends, whoever held it) and the address counts as verified (the
    code proved the mailbox). Errors as for verification: an unknown address or one without
    a live code looks like a wrong code, with its own 5-tries counter."""
    now = utcnow()
    settings = deps.settings
    limit = settings.verification_max_attempts
    outcome: CodeOutcome | None = None
    user = stored = None
    async with deps.sessions.begin() as session:
        user = await repo.user_by_email(session, email)
        if user is not None:
            stored = await repo.code_for_update(session, user.id, password_reset_codes)
        if user is not None and stored is not None:
            outcome = check_code(stored, code, now, limit)
            if outcome in (CodeOutcome.INVALID, CodeOutcome.KILLED):
                await repo.count_wrong_attempt(session, user.id, password_reset_codes)
    if outcome is None:
        outcome = await count_miss(
            deps, email, "reset_miss", settings.password_reset_code_ttl_seconds
        )

    if outcome is CodeOutcome.VERIFIED and user is not None and stored is not None:
        # Hash with no connection held, then spend the code only if it is still the one judged.
        password_hash = await hash_password(deps, new_password)
        async with deps.sessions.begin() as session:
            spent = await repo.consume_reset_code(
                session, user.id, stored.code_hash, utcnow(), limit
            )
            if spent:
                now = utcnow()
                await repo.update_user(
                    session, user.id, now, password_hash=password_hash, email_verified=True
                )
                await repo.delete_code(session, user.id)  # a pending verification code
                await repo.revoke_user_families(session, user.id, now)
        if spent:
            # The owner proved the mailbox: guesses made against the account before no longer
            # hold them back.
            await deps.redis.delete(
                email_key(settings, "login_tries", loose_email_key(email)),
                email_key(settings, "code_tries", email),
            )
            return
        outcome = CodeOutcome.INVALID  # spent or replaced meanwhile
    if outcome is CodeOutcome.EXPIRED:
        raise Problem(
            400, "reset_code_expired", "Reset code expired", "The code has expired; ask again"
        )
    if outcome is CodeOutcome.INVALID:
        raise Problem(400, "reset_code_invalid", "Invalid reset code", "The code is not valid")
    raise too_many_attempts()
