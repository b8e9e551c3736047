"""SQL of the users service (SQLAlchemy Core) on a session it is given. Never commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from snapshoe.users.domain import DEFAULT_LANG, CartEntry, StoredCode, parse_roles
from snapshoe.users.tables import (
    cart_lines,
    password_reset_codes,
    refresh_families,
    refresh_tokens,
    users,
    verification_codes,
)


@dataclass(frozen=True, slots=True)
class UserRow:
    id: str
    email: str
    password_hash: str
    name: str
    email_verified: bool
    roles: tuple[str, ...]
    lang: str = DEFAULT_LANG


@dataclass(frozen=True, slots=True)
class RefreshRow:
    token_hash: str
    family_id: str
    user_id: str
    spent: bool
    expires_at: datetime
    family_revoked: bool


_USER_COLS = (
    users.c.id,
    users.c.email,
    users.c.password_hash,
    users.c.name,
    users.c.email_verified,
    users.c.roles,
    users.c.lang,
)


def _user(row: object) -> UserRow:
    r = row._mapping  # type: ignore[attr-defined]
    return UserRow(
        id=r["id"],
        email=r["email"],
        password_hash=r["password_hash"],
        name=r["name"],
        email_verified=bool(r["email_verified"]),
        roles=parse_roles(r["roles"]),
        lang=r["lang"],
    )


def _rowcount(result: object) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


async def user_by_email(
    session: AsyncSession, email: str, *, for_update: bool = False
) -> UserRow | None:
    stmt = select(*_USER_COLS).where(users.c.email == email)
    if for_update:
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).first()
    return _user(row) if row else None


async def user_by_id(
    session: AsyncSession, user_id: str, *, for_share: bool = False
) -> UserRow | None:
    stmt = select(*_USER_COLS).where(users.c.id == user_id)
    if for_share:
        stmt = stmt.with_for_update(read=True)
    row = (await session.execute(stmt)).first()
    return _user(row) if row else None


async def created_at_of(session: AsyncSession, user_id: str) -> tuple[datetime, bool] | None:
    """When the account was made, and whether its email is verified."""
    stmt = select(users.c.created_at, users.c.email_verified).where(users.c.id == user_id)
    row = (await session.execute(stmt)).first()
    return (row[0], bool(row[1])) if row else None


async def insert_user(
    session: AsyncSession,
    *,
    user_id: str,
    email: str,
    password_hash: str,
    name: str,
    email_verified: bool,
    roles: str,
    now: datetime,
    lang: str = DEFAULT_LANG,
) -> None:
    await session.execute(
        insert(users).values(
            id=user_id,
            email=email,
            password_hash=password_hash,
            name=name,
            email_verified=email_verified,
            roles=roles,
            lang=lang,
            created_at=now,
            updated_at=now,
        )
    )


async def update_user(session: AsyncSession, user_id: str, now: datetime, **values: object) -> int:
    result = await session.execute(
        update(users).where(users.c.id == user_id).values(updated_at=now, **values)
    )
    return _rowcount(result)


async def mark_verified(session: AsyncSession, user_id: str, now: datetime) -> None:
    await session.execute(
        update(users).where(users.c.id == user_id).values(email_verified=True, updated_at=now)
    )


# Verification codes


async def put_code(
    session: AsyncSession,
    *,
    user_id: str,
    code_hash: str,
    salt: str,
    expires_at: datetime,
    now: datetime,
    table: Table = verification_codes,
) -> None:
    """Insert or replace the user's one live code (a new code resets the attempt counter).
    ``table``: ``verification_codes`` or ``password_reset_codes`` (same shape)."""
    stmt = mysql_insert(table).values(
        user_id=user_id,
        code_hash=code_hash,
        salt=salt,
        attempts=0,
        expires_at=expires_at,
        created_at=now,
    )
    stmt = stmt.on_duplicate_key_update(
        code_hash=stmt.inserted.code_hash,
        salt=stmt.inserted.salt,
        attempts=0,
        expires_at=stmt.inserted.expires_at,
        created_at=stmt.inserted.created_at,
    )
    await session.execute(stmt)


async def code_for_update(
    session: AsyncSession, user_id: str, table: Table = verification_codes
) -> StoredCode | None:
    """Lock the code row, so concurrent guesses are counted one after another."""
    row = (
        await session.execute(
            select(table.c.code_hash, table.c.salt, table.c.expires_at, table.c.attempts)
            .where(table.c.user_id == user_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        return None
    return StoredCode(
        code_hash=row.code_hash, salt=row.salt, expires_at=row.expires_at, attempts=row.attempts
    )


async def count_wrong_attempt(
    session: AsyncSession, user_id: str, table: Table = verification_codes
) -> None:
    await session.execute(
        update(table).where(table.c.user_id == user_id).values(attempts=table.c.attempts + 1)
    )


async def delete_code(
    session: AsyncSession, user_id: str, table: Table = verification_codes
) -> None:
    await session.execute(delete(table).where(table.c.user_id == user_id))


async def consume_reset_code(
    session: AsyncSession, user_id: str, code_hash: str, now: datetime, max_attempts: int
) -> bool:
    """Delete the reset code if it is still the one that was judged right, unexpired and
    alive. Of two concurrent confirms (or a confirm and a new request) one wins."""
    t = password_reset_codes
    result = await session.execute(
        delete(t).where(
            t.c.user_id == user_id,
            t.c.code_hash == code_hash,
            t.c.expires_at > now,
            t.c.attempts < max_attempts,
        )
    )
    return _rowcount(result) == 1


# Accounts left unverified


async def delete_expired_unverified(
    session: AsyncSession, *, created_before: datetime, email: str | None = None, limit: int = 500
) -> int:
    """Delete unverified accounts created before the cutoff (one address, or a batch). Their
    codes, sessions and cart go with them (ON DELETE CASCADE). Conditional on still being
    unverified, so an account verified meanwhile stays."""
    stmt = delete(users).where(
        users.c.email_verified.is_(False), users.c.created_at < created_before
    )
    if email is not None:
        stmt = stmt.where(users.c.email == email)
    else:
        stmt = stmt.with_dialect_options(mysql_limit=limit)
    return _rowcount(await session.execute(stmt))


# Refresh tokens


async def insert_family(session: AsyncSession, family_id: str, user_id: str, now: datetime) -> None:
    await session.execute(
        insert(refresh_families).values(
            id=family_id, user_id=user_id, revoked=False, created_at=now
        )
    )


async def insert_refresh(
    session: AsyncSession,
    *,
    token_hash: str,
    family_id: str,
    user_id: str,
    expires_at: datetime,
    now: datetime,
) -> None:
    await session.execute(
        insert(refresh_tokens).values(
            token_hash=token_hash,
            family_id=family_id,
            user_id=user_id,
            spent=False,
            expires_at=expires_at,
            created_at=now,
        )
    )


async def refresh_by_hash(session: AsyncSession, token_hash: str) -> RefreshRow | None:
    row = (
        await session.execute(
            select(
                refresh_tokens.c.token_hash,
                refresh_tokens.c.family_id,
                refresh_tokens.c.user_id,
                refresh_tokens.c.spent,
                refresh_tokens.c.expires_at,
                refresh_families.c.revoked,
            )
            .join(refresh_families, refresh_families.c.id == refresh_tokens.c.family_id)
            .where(refresh_tokens.c.token_hash == token_hash)
        )
    ).first()
    if row is None:
        return None
    return RefreshRow(
        token_hash=row.token_hash,
        family_id=row.family_id,
        user_id=row.user_id,
        spent=bool(row.spent),
        expires_at=row.expires_at,
        family_revoked=bool(row.revoked),
    )


async def spend_refresh(session: AsyncSession, token_hash: str, now: datetime) -> bool:
    """Conditional update: of two concurrent refreshes of one token exactly one sees a row."""
    result = await session.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.token_hash == token_hash, refresh_tokens.c.spent.is_(False))
        .values(spent=True, spent_at=now)
    )
    return _rowcount(result) == 1


async def lock_family(session: AsyncSession, family_id: str) -> bool:
    """Share-lock the family and return whether it is still live. A concurrent revocation
    (an exclusive row update) waits for this transaction, so a token issued here is either
    refused now or revoked right after: never left alive in a revoked family."""
    row = (
        await session.execute(
            select(refresh_families.c.revoked)
            .where(refresh_families.c.id == family_id)
            .with_for_update(read=True)
        )
    ).first()
    return row is not None and not row.revoked


async def revoke_user_families(session: AsyncSession, user_id: str, now: datetime) -> int:
    """Revoke every live refresh family of the account: each session it had ends (a change
    of password or roles, a verification). A refresh running concurrently holds a share lock
    on its family (``lock_family``), so it finishes first and its new token dies here."""
    result = await session.execute(
        update(refresh_families)
        .where(refresh_families.c.user_id == user_id, refresh_families.c.revoked.is_(False))
        .values(revoked=True, revoked_at=now)
    )
    return _rowcount(result)


async def revoke_family(session: AsyncSession, family_id: str, now: datetime) -> None:
    await session.execute(
        update(refresh_families)
        .where(refresh_families.c.id == family_id, refresh_families.c.revoked.is_(False))
        .values(revoked=True, revoked_at=now)
    )


# Cart


async def lock_user(session: AsyncSession, user_id: str) -> bool:
    """Lock the user row: cart changes of one user run one after another, so the line limit
    holds under concurrent adds. False if there is no such user."""
    row = (
        await session.execute(select(users.c.id).where(users.c.id == user_id).with_for_update())
    ).first()
    return row is not None


async def cart_entries(session: AsyncSession, user_id: str) -> list[CartEntry]:
    rows = (
        await session.execute(
            select(cart_lines.c.item_id, cart_lines.c.quantity)
            .where(cart_lines.c.user_id == user_id)
            .order_by(cart_lines.c.created_at, cart_lines.c.item_id)
        )
    ).all()
    return [CartEntry(r.item_id, r.quantity) for r in rows]


async def cart_line_count(session: AsyncSession, user_id: str) -> int:
    n = (
        await session.execute(
            select(func.count()).select_from(cart_lines).where(cart_lines.c.user_id == user_id)
        )
    ).scalar_one()
    return int(n)


async def cart_has_line(session: AsyncSession, user_id: str, item_id: str) -> bool:
    row = (
        await session.execute(
            select(cart_lines.c.item_id).where(
                cart_lines.c.user_id == user_id, cart_lines.c.item_id == item_id
            )
        )
    ).first()
    return row is not None


async def update_cart_line(
    session: AsyncSession, *, user_id: str, item_id: str, quantity: int, now: datetime
) -> bool:
    """Set the quantity of a line already in the cart; False if there is no such line."""
    result = await session.execute(
        update(cart_lines)
        .where(cart_lines.c.user_id == user_id, cart_lines.c.item_id == item_id)
        .values(quantity=quantity, updated_at=now)
    )
    return _rowcount(result) == 1


async def put_cart_line(
    session: AsyncSession, *, user_id: str, item_id: str, quantity: int, now: datetime
) -> None:
    """Set the line's quantity (PUT semantics: the same request twice leaves the same cart)."""
    stmt = mysql_insert(cart_lines).values(
        user_id=user_id, item_id=item_id, quantity=quantity, created_at=now, updated_at=now
    )
    stmt = stmt.on_duplicate_key_update(
        quantity=stmt.inserted.quantity, updated_at=stmt.inserted.updated_at
    )
    await session.execute(stmt)


async def delete_cart_line(session: AsyncSession, user_id: str, item_id: str) -> int:
    result = await session.execute(
        delete(cart_lines).where(cart_lines.c.user_id == user_id, cart_lines.c.item_id == item_id)
    )
    return _rowcount(result)


async def clear_cart(session: AsyncSession, user_id: str) -> int:
    result = await session.execute(delete(cart_lines).where(cart_lines.c.user_id == user_id))
    return _rowcount(result)


async def take_from_cart_line(
    session: AsyncSession, *, user_id: str, item_id: str, bought: int, now: datetime
) -> None:
    """Take ``bought`` units out of a line (domain.quantity_left): lower it if more remain,
    delete it otherwise. Both statements are conditional on the row as it is now, so a
    concurrent change of the line is never overwritten with a stale quantity."""
    # Delete first: lowering first could bring a line under ``bought`` and delete it too.
    await session.execute(
        delete(cart_lines).where(
            cart_lines.c.user_id == user_id,
            cart_lines.c.item_id == item_id,
            cart_lines.c.quantity <= bought,
        )
    )
    await session.execute(
        update(cart_lines)
        .where(
            cart_lines.c.user_id == user_id,
            cart_lines.c.item_id == item_id,
            cart_lines.c.quantity > bought,
        )
        .values(quantity=cart_lines.c.quantity - bought, updated_at=now)
    )
