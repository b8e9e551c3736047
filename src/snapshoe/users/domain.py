"""Pure account rules: email normalization, the password policy, verification codes and
refresh tokens. No I/O and no framework imports.

Password policy (NIST SP 800-63B style: length over composition rules):

- 10 to 128 characters (Unicode code points); the upper bound keeps hashing cheap to refuse;
- at least 4 distinct characters, which rejects ``aaaaaaaaaa`` and ``1212121212``;
- not only whitespace;
- not a common or breached password (case-insensitive), nor one of those with digits or
  symbols around it (``Password123!``), nor the account's own address or its local part.

The common-password list is package data (``users/data/common-passwords.txt.gz``): the 20,000
most common passwords of breach corpora compiled by Royce Williams, the list Django ships
(BSD-3-Clause), copied from the Django 5.2 wheel so there is no network at run time and no
framework dependency. It is read once, on the first check, like an import.

Verification codes: 6 digits from :mod:`secrets`, stored only as HMAC-SHA256 keyed with a
random per-code salt; a code expires after the configured TTL (10 minutes) and dies after 5
wrong tries. Password reset codes are the same kind of code, in their own table. Refresh
tokens: ``secrets.token_urlsafe(32)``, stored only as their SHA-256.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from importlib import resources
from typing import Literal

from email_validator import EmailNotValidError, validate_email

PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_LENGTH = 128
PASSWORD_MIN_DISTINCT = 4
EMAIL_MAX_LENGTH = 254
NAME_MAX_LENGTH = 100
CODE_DIGITS = 6
ADMIN_ROLE = "admin"
# The languages of an account's mail (``users.lang``); Korean unless the buyer chose English.
Lang = Literal["ko", "en"]
LANGS: tuple[Lang, ...] = ("ko", "en")
DEFAULT_LANG: Lang = "ko"


class PolicyError(ValueError):
    """Input that breaks an account rule; the message is safe to show the client."""


def normalize_email(raw: str) -> str:
    """Validate syntax (no DNS lookups) and return the lowercase normalized address."""
    if len(raw) > EMAIL_MAX_LENGTH:
        raise PolicyError("email address is too long")
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise PolicyError(f"not a valid email address: {exc}") from exc
    email = result.normalized.lower()
    if len(email) > EMAIL_MAX_LENGTH:
        raise PolicyError("email address is too long")
    return email


def loose_email_key(raw: str) -> str:
    """The lookup key for an address that may not be valid (login): never raises, so a
    malformed address answers exactly like an unknown one."""
    try:
        return normalize_email(raw)
    except PolicyError:
        return raw.strip().lower()


TOO_COMMON = "this password is too common: it is in lists of leaked passwords"


@functools.cache
def common_passwords() -> frozenset[str]:
    data = resources.files("snapshoe.users").joinpath("data/common-passwords.txt.gz")
    text = gzip.decompress(data.read_bytes()).decode("utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


# What people put around a common word: "Password123!", "!!dragon2024".
_DECORATION = "0123456789!@#$%^&*()-_=+.,?~ "


def password_problem(password: str, email: str | None = None) -> str | None:
    """Why ``password`` may not be set (for the account ``email``), or None if it may.

    The one password rule of every place that sets a password (sign-up, password reset,
    admin creation); the message is safe to show the client."""
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"password must have at least {PASSWORD_MIN_LENGTH} characters"
    if len(password) > PASSWORD_MAX_LENGTH:
        return f"password must have at most {PASSWORD_MAX_LENGTH} characters"
    if not password.strip():
        return "password must not be only whitespace"
    if len(set(password)) < PASSWORD_MIN_DISTINCT:
        return f"password must use at least {PASSWORD_MIN_DISTINCT} distinct characters"
    lowered = password.lower()
    common = common_passwords()
    core = lowered.strip(_DECORATION)
    if lowered in common or lowered.strip() in common or (len(core) >= 4 and core in common):
        return TOO_COMMON
    if email:
        address = email.strip().lower()
        local = address.split("@", 1)[0]
        if lowered in (address, local) or core in (address, local):
            return "password must not be your email address"
    return None


def check_password(password: str, email: str | None = None) -> str:
    """:func:`password_problem` as a validator: raises :class:`PolicyError` with the reason."""
    problem = password_problem(password, email)
    if problem is not None:
        raise PolicyError(problem)
    return password


def check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise PolicyError("name must not be empty")
    if len(name) > NAME_MAX_LENGTH:
        raise PolicyError(f"name must have at most {NAME_MAX_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise PolicyError("name must not contain control characters")
    return name


def new_user_id() -> str:
    return secrets.token_urlsafe(16)


def parse_roles(stored: str) -> tuple[str, ...]:
    return tuple(r for r in stored.split(",") if r)


def format_roles(roles: tuple[str, ...] | list[str] | set[str]) -> str:
    return ",".join(sorted(set(roles)))


# Verification codes


def generate_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def hash_code(code: str, salt: str) -> str:
    return hmac.new(bytes.fromhex(salt), code.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedCode:
    code: str  # only ever mailed, never stored
    salt: str
    code_hash: str
    expires_at: datetime


def issue_code(now: datetime, ttl_seconds: int) -> IssuedCode:
    code = generate_code()
    salt = secrets.token_hex(16)
    return IssuedCode(code, salt, hash_code(code, salt), now + timedelta(seconds=ttl_seconds))


class CodeOutcome(StrEnum):
    VERIFIED = "verified"
    INVALID = "invalid"  # wrong code, attempt counted
    KILLED = "killed"  # this wrong try was the last allowed one
    DEAD = "dead"  # already past the attempt limit
    EXPIRED = "expired"  # right code, too late


@dataclass(frozen=True, slots=True)
class StoredCode:
    code_hash: str
    salt: str
    expires_at: datetime
    attempts: int


def check_code(stored: StoredCode, candidate: str, now: datetime, max_attempts: int) -> CodeOutcome:
    """Judge a candidate code. The code is compared before the expiry is looked at, so only
    someone holding the right code learns that it expired."""
    if stored.attempts >= max_attempts:
        return CodeOutcome.DEAD
    if not hmac.compare_digest(hash_code(candidate, stored.salt), stored.code_hash):
        return CodeOutcome.KILLED if stored.attempts + 1 >= max_attempts else CodeOutcome.INVALID
    if now >= stored.expires_at:
        return CodeOutcome.EXPIRED
    return CodeOutcome.VERIFIED


def unverified_cutoff(now: datetime, ttl_hours: float) -> datetime:
    """Accounts created before this and still unverified have expired: nobody proved the
    address, so it may be registered anew (a squatter's account does not hold it forever)."""
    return now - timedelta(hours=ttl_hours)


def promotion_refusal(email_verified: bool) -> str | None:
    """Why an existing account may not be made an admin, or None. An unverified account may
    belong to whoever registered the address first, not to its owner."""
    if not email_verified:
        return (
            "the account's email is not verified, so it may not be its owner's; "
            "verify it first (or reset its password from the mailbox), then promote it"
        )
    return None


# Refresh tokens


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_family_id() -> str:
    return secrets.token_urlsafe(16)


# Cart
#
# A cart stores only (item, quantity); what an item is called, costs and whether it is in
# stock belong to products and are fetched when the cart is shown. When products cannot be
# reached the cart is still shown, "degraded": lines with what the cart knows and the rest
# unknown (null), and no total, because a total without prices would be a wrong number.

CART_MAX_LINES = 50  # distinct items; a cart is a shopping list, not a warehouse
CART_MAX_QUANTITY = 10  # per line (docs/api.md: 1..10)
# Item ids are opaque; anything outside URL-unreserved characters cannot be one (and a comma
# would break the products ``ids=a,b`` query).
ITEM_ID_PATTERN = r"^[A-Za-z0-9_.~-]{1,64}$"


@dataclass(frozen=True, slots=True)
class CartEntry:
    item_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class ItemInfo:
    """What products says about an item, as far as the cart shows it."""

    item_id: str
    product_id: str
    product_name: str
    size: int
    color: str
    unit_price: int
    available: bool


@dataclass(frozen=True, slots=True)
class CartLineView:
    item_id: str
    quantity: int
    product_id: str | None = None
    product_name: str | None = None
    size: int | None = None
    color: str | None = None
    unit_price: int | None = None
    available: bool | None = None  # None: unknown (products unreachable)


@dataclass(frozen=True, slots=True)
class CartView:
    lines: tuple[CartLineView, ...]
    total_amount: int | None
    degraded: bool


def build_cart_view(entries: list[CartEntry], details: dict[str, ItemInfo] | None) -> CartView:
    """``details`` is None when products could not be asked: the view is degraded. An item
    products no longer knows is shown as unavailable, without details, and adds nothing to
    the total. The total counts every priced line, in stock or not (it is the cart's value;
    an order of a sold-out line is refused by the order itself)."""
    if details is None:
        lines = tuple(CartLineView(e.item_id, e.quantity) for e in entries)
        return CartView(lines, None if entries else 0, degraded=bool(entries))
    out: list[CartLineView] = []
    total = 0
    for e in entries:
        info = details.get(e.item_id)
        if info is None:
            out.append(CartLineView(e.item_id, e.quantity, available=False))
            continue
        out.append(
            CartLineView(
                item_id=e.item_id,
                quantity=e.quantity,
                product_id=info.product_id,
                product_name=info.product_name,
                size=info.size,
                color=info.color,
                unit_price=info.unit_price,
                available=info.available,
            )
        )
        total += info.unit_price * e.quantity
    return CartView(tuple(out), total, degraded=False)


def bought_quantities(lines: list[tuple[str, int]]) -> dict[str, int]:
    """Units bought per item in an order (an order may name an item on several lines)."""
    bought: dict[str, int] = {}
    for item_id, quantity in lines:
        if quantity > 0:
            bought[item_id] = bought.get(item_id, 0) + quantity
    return bought


def quantity_left(in_cart: int, bought: int) -> int:
    """What stays in a cart line after an order from the cart bought ``bought`` units of it.

    Only what was bought is taken out: if the buyer raised the line after ordering (2 ordered,
    line now 3), 1 stays; if they lowered or removed it meanwhile, nothing is left (never
    negative). 0 means the line is deleted."""
    return max(0, in_cart - bought)
