"""Account commands and queries. Each opens its own transaction(s); none trusts the caller.

No enumeration: signup, resend and login answer the same status and body whatever the
address, and do comparable work (a dummy argon2 hash or verify where a real one is skipped).
Verification answers an unknown address like a wrong code, with its own attempt counter in
Redis so that even the 5-tries limit looks the same. Password reset does the same, and mails its
code after the answer has been sent, so a known and an unknown address also take the same time.

Every change of password or roles, and every verification, revokes all refresh families of the
account: a session taken before (perhaps by someone who registered the address first) never
outlives it (issue 12; docs/accounts.md).

Password hashing (argon2id, ~0.1 s of CPU) runs in a worker thread so the event loop keeps
serving, and never while a database connection is held.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pwdlib import PasswordHash
from sqlalchemy.exc import IntegrityError

from snapshoe.kernel.clients import UpstreamProblem, UpstreamUnavailable
from snapshoe.kernel.contracts.orders import OrderPlaced
from snapshoe.kernel.db import Sessions, create_engine, create_sessions
from snapshoe.kernel.errors import Problem
from snapshoe.kernel.messaging import handle_once
from snapshoe.kernel.redis import key
from snapshoe.kernel.settings import Settings
from snapshoe.users import repository as repo
from snapshoe.users.domain import (
    ADMIN_ROLE,
    CART_MAX_LINES,
    CartEntry,
    CartView,
    CodeOutcome,
    ItemInfo,
    PolicyError,
    bought_quantities,
    build_cart_view,
    check_code,
    check_name,
    check_password,
    format_roles,
    hash_refresh_token,
    issue_code,
    loose_email_key,
    new_family_id,
    new_refresh_token,
    new_user_id,
    normalize_email,
    promotion_refusal,
    unverified_cutoff,
    utcnow,
)
from snapshoe.users.tables import inbox, password_reset_codes

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from snapshoe.users.bootstrap import Deps

log = logging.getLogger("snapshoe.users")


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


def invalid_credentials() -> Problem:
    return Problem(
        401,
        "invalid_credentials",
        "Invalid credentials",
        "The email or password is wrong",
        headers={"WWW-Authenticate": 'Bearer realm="snapshoe"'},
    )


def invalid_token() -> Problem:
    return Problem(401, "invalid_token", "Invalid token", "The refresh token is not valid")


def email_key(settings: Settings, purpose: str, email: str) -> str:
    """Redis key of a per-address counter or throttle (``mail``: the resend interval;
    ``mail_hour``: sign-up and resend mails per hour; ``code_tries``: wrong codes across
    resends; ``login_tries``: login attempts). Hashed so addresses do not sit in key names
    in the clear."""
    digest = hashlib.sha256(email.encode()).hexdigest()[:40]
    return key(settings, "users", purpose, digest)


async def _claim_send_slot(deps: Deps, email: str) -> bool:
    """True if no mail went to this address within the resend interval (and claims it)."""
    claimed = await deps.redis.set(
        email_key(deps.settings, "mail", email),
        "1",
        nx=True,
        ex=deps.settings.verification_resend_interval_seconds,
    )
    return bool(claimed)


async def _count(deps: Deps, *counters: tuple[str, int]) -> list[tuple[int, int]]:
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


async def _spend_mail_budget(deps: Deps, email: str) -> None:
    """The hourly budget of sign-up and resend mails per target address (429 past it),
    counted whether or not the address is registered, so the 429 tells nothing."""
    ((n, left),) = await _count(deps, (email_key(deps.settings, "mail_hour", email), 3600))
    if n > deps.settings.mails_per_address_per_hour:
        raise too_many_requests("Too many messages were sent to this address; try later", left)


async def _hash(deps: Deps, password: str) -> str:
    return await asyncio.to_thread(deps.hasher.hash, password)


async def _verify(deps: Deps, password: str, password_hash: str) -> bool:
    return await asyncio.to_thread(deps.hasher.verify, password, password_hash)


# Signup and verification
#
# Mail is queued (users.mail.MailQueue) and sent by the users worker after the answer: every
# branch costs one queue append at most, and never an SMTP round trip.


async def sign_up(deps: Deps, *, email: str, password: str, name: str) -> None:
    """``email``, ``password`` and ``name`` are already validated by the schema. An account
    of this address left unverified past its TTL is deleted first (as the worker would), so
    this sign-up is a fresh one."""
    # Before the argon2 hash: a refused sign-up costs a Redis round trip, not a hash.
    await _spend_mail_budget(deps, email)
    async with deps.sessions.begin() as session:
        cutoff = unverified_cutoff(utcnow(), deps.settings.unverified_account_ttl_hours)
        await repo.delete_expired_unverified(session, created_before=cutoff, email=email)
        existing = await repo.user_by_email(session, email)
    if existing is not None:
        await _hash(deps, password)  # same work as a new signup; the result is dropped
        if await _claim_send_slot(deps, email):
            await deps.mail_queue.enqueue({"kind": "notice", "to": email}, ttl_seconds=3600)
        return

    password_hash = await _hash(deps, password)
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
    await _claim_send_slot(deps, email)  # a signup counts as a send for the resend limit
    await deps.mail_queue.enqueue({"kind": "code", "to": email, "code": code.code}, ttl_seconds=ttl)


async def resend_code(deps: Deps, *, email: str) -> None:
    # The throttles come first and are per address whether or not it is registered, so a 429
    # says nothing about the address; then the same one queue append for every address (the
    # worker finds out whether there is anything to send: resend_now).
    if not await _claim_send_slot(deps, email):
        ttl = await deps.redis.ttl(email_key(deps.settings, "mail", email))
        raise too_many_requests(
            "A code was sent to this address recently; wait before asking again", int(ttl)
        )
    await _spend_mail_budget(deps, email)
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


async def _count_miss(
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


async def run_mail_job(deps: Deps, job: dict[str, Any]) -> bool:
    """One queued mail job (users.mail.drain): True when done, False to retry it."""
    kind, to = job.get("kind"), str(job.get("to", ""))
    ttl = deps.settings.verification_code_ttl_seconds
    if kind == "code":
        return await deps.mailer.send_code(to, str(job["code"]), ttl)
    if kind == "notice":
        return await deps.mailer.send_already_registered(to)
    if kind == "resend":
        return await resend_now(deps, to)
    if kind == "reset":
        return await reset_now(deps, to)
    log.error("unknown mail job %r dropped", kind)
    return True


def _client_key(settings: Settings, purpose: str, client: str) -> str:
    digest = hashlib.sha256(client.encode()).hexdigest()[:40]
    return key(settings, "users", purpose, digest)


def too_many_attempts() -> Problem:
    return Problem(
        429,
        "too_many_attempts",
        "Too many attempts",
        "Too many wrong codes: this code no longer works; ask for a new one",
    )


async def _count_wrong_try(deps: Deps, email: str) -> CodeOutcome:
    """The address's wrong tries, across resends: kept in Redis for one code lifetime from
    the first wrong try (a resend gives a new code, not new tries). Unknown and verified
    addresses count the same way, so the 5-tries limit looks the same for them."""
    ((count, _),) = await _count(
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
    ((tries, left),) = await _count(
        deps, (_client_key(settings, "code_tries_client", client), 24 * 3600)
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
        outcome = await _count_miss(
            deps, email, "reset_miss", settings.password_reset_code_ttl_seconds
        )

    if outcome is CodeOutcome.VERIFIED and user is not None and stored is not None:
        # Hash with no connection held, then spend the code only if it is still the one judged.
        password_hash = await _hash(deps, new_password)
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


# Tokens


async def _issue_pair(
    deps: Deps, session: AsyncSession, user: repo.UserRow, family_id: str
) -> TokenPair:
    now = utcnow()
    refresh = new_refresh_token()
    await repo.insert_refresh(
        session,
        token_hash=hash_refresh_token(refresh),
        family_id=family_id,
        user_id=user.id,
        expires_at=now + timedelta(seconds=deps.settings.refresh_token_ttl_seconds),
        now=now,
    )
    access, ttl = deps.issuer.issue_access(
        user.id, email_verified=user.email_verified, roles=user.roles
    )
    return TokenPair(access_token=access, refresh_token=refresh, expires_in=ttl)


async def _throttle_login(deps: Deps, lookup: str, client: str) -> tuple[str, str]:
    """Count this attempt against the account (the address tried, registered or not) and
    against the account from this client address; 429 past either limit, before any
    password check. Returns the two counter keys (a success gives its attempt back)."""
    s = deps.settings
    window = s.login_failure_window_seconds
    account = email_key(s, "login_tries", lookup)
    pair = email_key(s, "login_tries", f"{lookup}\n{client}")
    (pair_n, pair_left), (account_n, account_left) = await _count(
        deps, (pair, window), (account, window)
    )
    if pair_n > s.login_failures_per_address:
        raise too_many_requests("Too many failed logins; retry later", pair_left)
    if account_n > s.login_failures_per_account:
        raise too_many_requests("Too many failed logins; retry later", account_left)
    return pair, account


async def login(deps: Deps, *, email: str, password: str, client: str = "") -> TokenPair:
    lookup = loose_email_key(email)
    # Counted before the check, so concurrent guesses cannot pass the limit together.
    pair_key, account_key = await _throttle_login(deps, lookup, client)
    async with deps.sessions.begin() as session:
        user = await repo.user_by_email(session, lookup)
    if user is None:
        await _verify(deps, password, deps.dummy_hash)  # same work as a real check
        raise invalid_credentials()
    if not await _verify(deps, password, user.password_hash):
        raise invalid_credentials()
    # Only failures count: this address starts over, the account gets this attempt back.
    async with deps.redis.pipeline(transaction=True) as pipe:
        pipe.delete(pair_key)
        pipe.decr(account_key)
        await pipe.execute()
    async with deps.sessions.begin() as session:
        # The password may have changed (a reset, which revokes every family) while it was
        # being checked: the share lock orders this login against that change, and a login
        # with the old password then gets no session.
        current = await repo.user_by_id(session, user.id, for_share=True)
        if current is None or current.password_hash != user.password_hash:
            raise invalid_credentials()
        family_id = new_family_id()
        await repo.insert_family(session, family_id, current.id, utcnow())
        return await _issue_pair(deps, session, current, family_id)


async def refresh(deps: Deps, *, refresh_token: str) -> TokenPair:
    """Rotate a refresh token. A token presented a second time (replay, theft, or two
    concurrent refreshes of one token) revokes its whole family: every token of that login,
    including the one issued by the first use, stops working (OAuth 2.0 Security BCP)."""
    token_hash = hash_refresh_token(refresh_token)
    now = utcnow()
    async with deps.sessions.begin() as session:
        row = await repo.refresh_by_hash(session, token_hash)
        if row is None or row.family_revoked or row.expires_at <= now:
            pair = None
        elif row.spent or not await repo.spend_refresh(session, token_hash, now):
            # Spent before, or spent by a concurrent request just now: reuse.
            await repo.revoke_family(session, row.family_id, now)
            log.warning("refresh token reuse: family revoked", extra={"user_id": row.user_id})
            pair = None
        elif not await repo.lock_family(session, row.family_id):
            pair = None  # revoked between our read and our spend
        else:
            user = await repo.user_by_id(session, row.user_id)
            pair = None if user is None else await _issue_pair(deps, session, user, row.family_id)
    if pair is None:
        raise invalid_token()
    return pair


async def logout(deps: Deps, *, refresh_token: str) -> None:
    """Revoke the token's family. An unknown token is a no-op: logout always succeeds."""
    async with deps.sessions.begin() as session:
        row = await repo.refresh_by_hash(session, hash_refresh_token(refresh_token))
        if row is not None:
            await repo.revoke_family(session, row.family_id, utcnow())


async def me(deps: Deps, *, user_id: str) -> repo.UserRow:
    async with deps.sessions.begin() as session:
        user = await repo.user_by_id(session, user_id)
    if user is None:
        # A valid token for a user that no longer exists.
        raise Problem(401, "unauthorized", detail="Unknown user")
    return user


# Operations


@dataclass(frozen=True, slots=True)
class AdminResult:
    user_id: str
    email: str
    created: bool  # False: an existing account was promoted


async def create_admin(
    settings: Settings, email: str, password: str, name: str = "Admin"
) -> AdminResult:
    """Create a verified admin (the operator sets the password, so a new account needs no
    mailed code), or promote an existing account whose email is verified (role ``admin``
    added, password replaced, every session of the account revoked: a refresh token issued
    before never yields an admin token). Raises :class:`snapshoe.users.domain.PolicyError` on
    a bad address, password or name, or an unverified account (left unchanged). Used by
    ``snapshoe users create-admin``."""
    email = normalize_email(email)
    check_password(password, email)
    name = check_name(name)
    password_hash = await asyncio.to_thread(PasswordHash.recommended().hash, password)
    engine = create_engine(settings, "users", pool_size=1)
    try:
        async with create_sessions(engine).begin() as session:
            now = utcnow()
            user = await repo.user_by_email(session, email, for_update=True)
            if user is not None:
                refusal = promotion_refusal(user.email_verified)
                if refusal is not None:
                    raise PolicyError(refusal)
                await repo.update_user(
                    session,
                    user.id,
                    now,
                    password_hash=password_hash,
                    roles=format_roles([*user.roles, ADMIN_ROLE]),
                )
                await repo.revoke_user_families(session, user.id, now)
                return AdminResult(user.id, email, created=False)
            user_id = new_user_id()
            await repo.insert_user(
                session,
                user_id=user_id,
                email=email,
                password_hash=password_hash,
                name=name,
                email_verified=True,
                roles=format_roles([ADMIN_ROLE]),
                now=now,
            )
            return AdminResult(user_id, email, created=True)
    finally:
        await engine.dispose()


async def expire_unverified_accounts(
    sessions: Sessions, *, now: datetime, ttl_hours: float, batch: int = 500
) -> int:
    """One step of the users worker: delete accounts left unverified for ``ttl_hours`` (with
    their codes, sessions and cart), a batch per transaction. Returns how many went."""
    cutoff = unverified_cutoff(now, ttl_hours)
    total = 0
    while True:
        async with sessions.begin() as session:
            n = await repo.delete_expired_unverified(session, created_before=cutoff, limit=batch)
        total += n
        if n < batch:
            return total


# Cart
#
# The one rule of the cart's calls to products: never while a database connection is held,
# and never failing the cart view. A products outage shows the cart "degraded"; only adding
# or changing a line, which needs products to say the item exists, is refused (503).


async def _item_details(deps: Deps, item_ids: list[str]) -> dict[str, ItemInfo] | None:
    """Products' view of the items, keyed by item id; None when products cannot answer."""
    try:
        body = await deps.products.item_details(item_ids)
        return {
            i["item_id"]: ItemInfo(
                item_id=str(i["item_id"]),
                product_id=str(i["product_id"]),
                product_name=str(i["product_name"]),
                size=int(i["size"]),
                color=str(i["color"]),
                unit_price=int(i["unit_price"]),
                available=bool(i["available"]),
            )
            for i in body["items"]
        }
    except UpstreamUnavailable as exc:
        log.warning("products unreachable for the cart: %r", exc)
    except (UpstreamProblem, KeyError, TypeError, ValueError) as exc:
        # A 4xx or a malformed answer is a bug (or a wrong internal token), not the buyer's.
        log.error("products answered the cart with something unusable: %r", exc)
    return None


async def _entries(deps: Deps, user_id: str) -> list[CartEntry]:
    async with deps.sessions.begin() as session:
        return await repo.cart_entries(session, user_id)


async def _view(
    deps: Deps, entries: list[CartEntry], known: dict[str, ItemInfo | None] | None = None
) -> CartView:
    """The cart view of ``entries``. ``known``: products' answers already in hand (None =
    products does not know the item), so a command that just asked products does not ask
    again; only lines it did not ask about (a concurrent add) are fetched."""
    if not entries:
        return build_cart_view([], {})
    answers = dict(known or {})
    wanted = [e.item_id for e in entries if e.item_id not in answers]
    if wanted:
        fetched = await _item_details(deps, wanted)
        if fetched is None:
            return build_cart_view(entries, None)
        answers.update({i: fetched.get(i) for i in wanted})
    return build_cart_view(entries, {k: v for k, v in answers.items() if v is not None})


async def get_cart(deps: Deps, *, user_id: str) -> CartView:
    return await _view(deps, await _entries(deps, user_id))


def _unknown_item(item_id: str) -> Problem:
    return Problem(404, "not_found", detail=f"No item {item_id!r}")


async def set_cart_line(deps: Deps, *, user_id: str, item_id: str, quantity: int) -> CartView:
    """Put an item in the cart with this quantity (replacing the line's quantity).

    One products call checks the item and prices the lines already there, so a change costs
    what a view costs."""
    ids = list(dict.fromkeys([item_id, *(e.item_id for e in await _entries(deps, user_id))]))
    details = await _item_details(deps, ids)
    if details is None:
        raise Problem(
            503,
            "service_unavailable",
            detail="The catalog cannot be reached to check the item; try again shortly",
            headers={"Retry-After": "2"},
        )
    # The database compares ids case-insensitively; store the id as products spells it.
    info = next((d for k, d in details.items() if k.lower() == item_id.lower()), None)
    if info is None:
        raise _unknown_item(item_id)
    known: dict[str, ItemInfo | None] = {i: details.get(i) for i in ids}
    known[info.item_id] = info
    now = utcnow()
    async with deps.sessions.begin() as session:
        # Changing a line already there is one conditional update: it needs no limit check,
        # so it takes no lock on the user (many changes of one cart don't queue on it).
        changed = await repo.update_cart_line(
            session, user_id=user_id, item_id=info.item_id, quantity=quantity, now=now
        )
        if not changed:
            # A new line: the user row lock makes "count, then insert" atomic per user, so
            # concurrent adds never pass the limit together.
            if not await repo.lock_user(session, user_id):
                raise Problem(404, "not_found", detail="No such user")
            full = await repo.cart_line_count(session, user_id) >= CART_MAX_LINES
            if full and not await repo.cart_has_line(session, user_id, info.item_id):
                raise Problem(
                    409,
                    "cart_full",
                    "Cart full",
                    f"A cart holds at most {CART_MAX_LINES} different items",
                    max_lines=CART_MAX_LINES,
                )
            # An upsert: a concurrent first add of the same item may have inserted it.
            await repo.put_cart_line(
                session, user_id=user_id, item_id=info.item_id, quantity=quantity, now=now
            )
        entries = await repo.cart_entries(session, user_id)
    return await _view(deps, entries, known)


async def remove_cart_line(deps: Deps, *, user_id: str, item_id: str) -> CartView:
    """Removing a line that is not in the cart is not an error (DELETE is idempotent)."""
    async with deps.sessions.begin() as session:
        await repo.lock_user(session, user_id)
        await repo.delete_cart_line(session, user_id, item_id)
        entries = await repo.cart_entries(session, user_id)
    return await _view(deps, entries)


async def clear_cart(deps: Deps, *, user_id: str) -> None:
    async with deps.sessions.begin() as session:
        await repo.lock_user(session, user_id)
        await repo.clear_cart(session, user_id)


async def cart_entries(deps: Deps, *, user_id: str) -> list[CartEntry]:
    """The raw lines, for the orders service (it prices and checks them with products)."""
    return await _entries(deps, user_id)


async def apply_order_placed(session: AsyncSession, event: OrderPlaced) -> None:
    """An order made from the cart takes what it bought out of the cart (domain.quantity_left).
    Runs in the consumer's inbox transaction, so a duplicate event changes nothing."""
    if not event.from_cart:
        return
    bought = bought_quantities([(line.item_id, line.quantity) for line in event.lines])
    if not bought:
        return
    if not await repo.lock_user(session, event.buyer_id):
        return
    now = utcnow()
    for item_id, quantity in sorted(bought.items()):
        await repo.take_from_cart_line(
            session, user_id=event.buyer_id, item_id=item_id, bought=quantity, now=now
        )


async def take_ordered_lines(deps: Deps, *, consumer: str, event: OrderPlaced) -> bool:
    """The ``order.placed`` effect on the cart, applied now for orders (which calls this
    before its 201, so the buyer's next cart read is without the bought lines). Recorded in
    the cart consumer's inbox under the event's id: the event, when it arrives, is then a
    duplicate, and a retry of this call too. False if it was applied already."""

    async def apply(session: AsyncSession, _: dict[str, Any]) -> None:
        await apply_order_placed(session, event)

    return await handle_once(deps.sessions, inbox, consumer, event.to_message(), apply)
