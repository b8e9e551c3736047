"""Tables of the users service database (``<namespace>_users``).

Secrets are never stored in the clear: passwords as argon2id hashes, verification codes as
salted HMAC-SHA256, refresh tokens as SHA-256. Revocation lives on the refresh token *family*
so that one row update kills every token of a login session, including one being issued
concurrently (see ``repository.lock_family``).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
)

from snapshoe.kernel.db import ts_column
from snapshoe.kernel.messaging import messaging_tables

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    # Stored lowercase after normalization; the unique index makes signup races safe.
    Column("email", String(254), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("name", String(100), nullable=False),
    Column("email_verified", Boolean, nullable=False, default=False),
    Column("roles", String(255), nullable=False, default=""),  # comma-separated
    # The language of the account's mail: 'ko' (the default) or 'en' (domain.LANGS).
    Column("lang", String(2), nullable=False, default="ko", server_default="ko"),
    ts_column("created_at"),
    ts_column("updated_at"),
    # The users worker's search for unverified accounts past their TTL.
    Index("ix_users_unverified", "email_verified", "created_at"),
)

# One live code per user: a resend replaces the row (and resets the attempt counter).
verification_codes = Table(
    "verification_codes",
    metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("code_hash", String(64), nullable=False),
    Column("salt", String(32), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    ts_column("expires_at"),
    ts_column("created_at"),
)

# One live password reset code per user, like verification codes (a new request replaces it).
password_reset_codes = Table(
    "password_reset_codes",
    metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("code_hash", String(64), nullable=False),
    Column("salt", String(32), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    ts_column("expires_at"),
    ts_column("created_at"),
)

refresh_families = Table(
    "refresh_families",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
    ts_column("revoked_at", nullable=True),
    ts_column("created_at"),
    Index("ix_refresh_families_user_id", "user_id"),
    # Revoking every live family of an account (reset, verification, promotion).
    Index("ix_refresh_families_user_revoked", "user_id", "revoked"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column(
        "family_id",
        String(32),
        ForeignKey("refresh_families.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("user_id", String(32), nullable=False),
    Column("spent", Boolean, nullable=False, default=False),
    ts_column("spent_at", nullable=True),
    ts_column("expires_at"),
    ts_column("created_at"),
    Index("ix_refresh_tokens_family_id", "family_id"),
)

# The cart: one row per (user, item). Only what the buyer chose is stored; names, prices and
# availability belong to products and are fetched when the cart is shown. ``item_id`` is not a
# foreign key: items live in another service's database.
cart_lines = Table(
    "cart_lines",
    metadata,
    Column("user_id", String(32), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("item_id", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    ts_column("created_at"),
    ts_column("updated_at"),
    PrimaryKeyConstraint("user_id", "item_id", name="pk_cart_lines"),
)

# Inbox: event ids the cart consumer already applied (duplicates have no second effect). The
# outbox is created with it (the kernel defines the pair); users publishes no event yet.
outbox, inbox = messaging_tables(metadata)
