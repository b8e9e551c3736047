"""Sign-up, resend and email verification. No enumeration: they answer the same status and
body whatever the address, and do comparable work (a dummy argon2 hash where a real one is
skipped). Verification answers an unknown address like a wrong code, with its own attempt
counter in Redis so that even the 5-tries limit looks the same."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.errors import Problem
from snapshoe.users import repository as repo
from snapshoe.users.domain import (
    DEFAULT_LANG,
    CodeOutcome,
    check_code,
    issue_code,
    new_user_id,
    unverified_cutoff,
)
from snapshoe.users.passwords import hash_password
from snapshoe.users.throttles import (
    bump_counters,
    claim_send_slot,
    client_key,
    email_key,
    spend_mail_budget,
    too_many_attempts,
    too_many_requests,
)

if TYPE_CHECKING:
    from snapshoe.users.deps import Deps

log = logging.getLogger("snapshoe.users")


# Signup and verification
#
# Mail is queued (users.mail.MailQueue) and sent by the users worker after the answer: every
# branch costs one queue append at most, and never an SMTP round trip.


async def sign_up(
    deps: Deps, *, email: str, password: str, name: str, lang: str = DEFAULT_LANG
) -> None:
    """``email``, ``password``, ``name`` and ``lang`` are already validated by the schema
    (``lang`` is set on a new account only: an existing one keeps its own). An account
    of this address left unverified past its TTL is deleted first (as the worker would), so
    this sign-up is a fresh one."""
    # Before the argon2 hash: a refused sign-up costs a Redis round trip, not a hash.
    await spend_mail_budget(deps, email)
    async with deps.sessions.begin() as session:
        cutoff = unverified_cutoff(utcnow(), deps.settings.unverified_account_ttl_hours)
        await repo.delete_expired_unverified(session, created_before=cutoff, email=email)
        existing = await repo.user_by_email(session, email)
    if existing is not None:
        await hash_password(deps, password)  # same work as a new signup; the result is dropped
        if await claim_send_slot(deps, email):
            await deps.mail_queue.enqueue({"kind": "notice", "to": email}, ttl_seconds=3600)
        return

    password_hash = await hash_password(deps, password)
    now = utcnow()
    ttl = deps.settings.verification_code_ttl_seconds
    code = issue_code(now, ttl)
    try:
        async with deps.sessions.begin() as session:
            user_id = new_user_id()
            await repo.insert_user(
                session,
                user_id=user_id,
                email=email,
                password_hash=password_hash,
                name=name,
                email_verified=False,
                roles="",
                now=now,
                lang=lang,
            )
            await repo.put_code(
                session,
                user_id=user_id,
                code_hash=code.code_hash,
                salt=code.salt,
                expires_at=code.expires_at,
                now=now,
            )
    except IntegrityError:
        # A concurrent signup for the same address won the unique index; it mails the code.
        return
    await claim_send_slot(deps, email)  # a signup counts as a send for the resend limit
    await deps.mail_queue.enqueue({"kind": "code", "to": email, "code": code.code}, ttl_seconds=ttl)


async def resend_code(deps: Deps, *, email: str) -> None:
    # The throttles come first and are per address whether or not it is registered, so a 429
    # says nothing about the address; then the same one queue append for every address (the
    # worker finds out whether there is anything to send: resend_now).
    if not await claim_send_slot(deps, email):
        ttl = await deps.redis.ttl(email_key(deps.settings, "mail", email))
        raise too_many_requests(
            "A code was sent to this address recently; wait before asking again", int(ttl)
        )
    await spend_mail_budget(deps, email)
    await deps.mail_queue.enqueue(
        {"kind": "resend", "to": email}, ttl_seconds=deps.settings.verification_code_ttl_seconds
    )


async def resend_now(deps: Deps, email: str) -> bool:
    """The worker's half of a resend: a new code for an unverified account, mailed. True
    when done (including "nothing to send"); False when the mail failed (retried later)."""
    now = utcnow()
    ttl = deps.settings.verification_code_ttl_seconds
    code = issue_code(now, ttl)
    async with deps.sessions.begin() as session:
        user = await repo.user_by_email(session, email)
        if user is None or user.email_verified:
            return True
        # A new code, but not new tries: they are counted per address (code_tries).
        await repo.put_code(
            session,
            user_id=user.id,
            code_hash=code.code_hash,
            salt=code.salt,
            expires_at=code.expires_at,
            now=now,
        )
    return await deps.mailer.send_code(email, code.code, ttl)


async def _count_wrong_try(deps: Deps, email: str) -> CodeOutcome:
    """The address's wrong tries, across resends: kept in Redis for one code lifetime from
    the first wrong try (a resend gives a new code, not new tries). Unknown and verified
    addresses count the same way, so the 5-tries limit looks the same for them."""
    ((count, _),) = await bump_counters(
        deps,
        (
            email_key(deps.settings, "code_tries", email),
            deps.settings.verification_code_ttl_seconds,
        ),
    )
    limit = deps.settings.verification_max_attempts
    if count > limit:
        return CodeOutcome.DEAD
    return CodeOutcome.KILLED if count == limit else CodeOutcome.INVALID


async def verify_email(deps: Deps, *, email: str, code: str, client: str = "") -> None:
    settings = deps.settings
    # Tries per client address per day, whatever addresses it tries: bounds guessing from one
    # address past the gateway's per-minute limit (which a path trick or a restart resets).
    ((tries, left),) = await bump_counters(
        deps, (client_key(settings, "code_tries_client", client), 24 * 3600)
    )
    if tries > settings.verification_tries_per_address_per_day:
        raise too_many_requests("Too many verification attempts from this address", left)
    tries_key = email_key(settings, "code_tries", email)
    if int(await deps.redis.get(tries_key) or 0) >= settings.verification_max_attempts:
        raise too_many_attempts()

    now = utcnow()
    outcome: CodeOutcome | None = None
    async with deps.sessions.begin() as session:
        user = await repo.user_by_email(session, email)
        stored = None
        if user is not None and not user.email_verified:
            stored = await repo.code_for_update(session, user.id)
        if user is not None and stored is not None:
            outcome = check_code(stored, code, now, settings.verification_max_attempts)
            if outcome in (CodeOutcome.INVALID, CodeOutcome.KILLED):
                await repo.count_wrong_attempt(session, user.id)
                # Counted under the code's row lock, so concurrent guesses see exact counts.
                across = await _count_wrong_try(deps, email)
                if across is not CodeOutcome.INVALID and outcome is CodeOutcome.INVALID:
                    outcome = across
            elif outcome is CodeOutcome.VERIFIED:
                await repo.mark_verified(session, user.id, now)
                await repo.delete_code(session, user.id)
                # Sessions taken before the mailbox was proven end here: one may belong to
                # whoever registered the address first. The owner logs in afresh.
                await repo.revoke_user_families(session, user.id, now)
    if outcome is None:
        outcome = await _count_wrong_try(deps, email)

    # Raised after the commit, so a wrong try is counted even though the request fails.
    if outcome is CodeOutcome.VERIFIED:
        await deps.redis.delete(tries_key)
        return
    if outcome is CodeOutcome.EXPIRED:
        raise Problem(
            400,
            "verification_code_expired",
            "Verification code expired",
            "The code has expired; ask for a new one",
        )
    if outcome is CodeOutcome.INVALID:
        raise Problem(
            400, "verification_code_invalid", "Invalid verification code", "The code is not valid"
        )
    raise too_many_attempts()
