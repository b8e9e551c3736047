"""Account commands outside the request paths: who am I, the operator's ``create-admin``, and
the worker's expiry of accounts left unverified (the other commands: users.verification,
users.reset, users.sessions, users.cart; their rules in docs/accounts.md)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from pwdlib import PasswordHash

from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.contracts.internal_users import AccountFacts, UserRef
from snapshoe.kernel.db import Sessions, create_engine, create_sessions
from snapshoe.kernel.errors import Problem, not_found
from snapshoe.kernel.settings import Settings
from snapshoe.users import repository as repo
from snapshoe.users.domain import (
    ADMIN_ROLE,
    PolicyError,
    check_name,
    check_password,
    format_roles,
    loose_email_key,
    new_user_id,
    normalize_email,
    promotion_refusal,
    unverified_cutoff,
)

if TYPE_CHECKING:
    from snapshoe.users.deps import Deps

log = logging.getLogger("snapshoe.users")


async def me(deps: Deps, *, user_id: str) -> repo.UserRow:
    async with deps.sessions.begin() as session:
        user = await repo.user_by_id(session, user_id)
    if user is None:
        # A valid token for a user that no longer exists.
        raise Problem(401, "unauthorized", detail="Unknown user")
    return user


async def set_lang(deps: Deps, *, user_id: str, lang: str) -> repo.UserRow:
    """The account's mail language (domain.LANGS; the schema checked it)."""
    async with deps.sessions.begin() as session:
        await repo.update_user(session, user_id, utcnow(), lang=lang)
        user = await repo.user_by_id(session, user_id)
    if user is None:
        raise Problem(401, "unauthorized", detail="Unknown user")
    return user


async def account_facts(deps: Deps, user_id: str) -> AccountFacts:
    async with deps.sessions() as session:
        found = await repo.created_at_of(session, user_id)
    if found is None:
        raise not_found("account")
    return AccountFacts(user_id=user_id, created_at=found[0], email_verified=found[1])


async def user_of_email(deps: Deps, email: str) -> UserRef:
    """The account of an address, for another service (orders' admin list by buyer email).
    A malformed address answers like an unknown one: 404."""
    async with deps.sessions() as session:
        user = await repo.user_by_email(session, loose_email_key(email))
    if user is None:
        raise not_found("account")
    return UserRef(user_id=user.id)


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
