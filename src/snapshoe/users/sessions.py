"""Sessions: login (with its throttles), refresh-token rotation, logout.

Password hashing runs in a worker thread (users.passwords), never while a database connection
is held. Every change of password or roles revokes all refresh families (docs/accounts.md)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.errors import Problem
from snapshoe.users import repository as repo
from snapshoe.users.domain import (
    hash_refresh_token,
    loose_email_key,
    new_family_id,
    new_refresh_token,
)
from snapshoe.users.passwords import verify_password
from snapshoe.users.throttles import bump_counters, email_key, too_many_requests

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from snapshoe.users.deps import Deps

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
    (pair_n, pair_left), (account_n, account_left) = await bump_counters(
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
        await verify_password(deps, password, deps.dummy_hash)  # same work as a real check
        raise invalid_credentials()
    if not await verify_password(deps, password, user.password_hash):
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
