"""Pure account rules: email normalization, the password policy, verification codes and
refresh tokens. No I/O and no framework imports.

Password policy (NIST SP 800-63B style: length over composition rules):

- 10 to 128 characters (Unicode code points); the upper bound keeps hashing cheap to refuse;
- at least 4 distinct characters, which rejects ``aaaaaaaaaa`` and ``1212121212``;
- not only whitespace.

Verification codes: 6 digits from :mod:`secrets`, stored only as HMAC-SHA256 keyed with a
random per-code salt; a code expires after the configured TTL (10 minutes) and dies after 5
wrong tries. Refresh tokens: ``secrets.token_urlsafe(32)``, stored only as their SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from email_validator import EmailNotValidError, validate_email

PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_LENGTH = 128
PASSWORD_MIN_DISTINCT = 4
EMAIL_MAX_LENGTH = 254
NAME_MAX_LENGTH = 100
CODE_DIGITS = 6
ADMIN_ROLE = "admin"


class PolicyError(ValueError):
    """Input that breaks an account rule; the message is safe to show the client."""


def utcnow() -> datetime:
    """Naive UTC, the way ``DATETIME(6)`` columns store it."""
    return datetime.now(UTC).replace(tzinfo=None)


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


def check_password(password: str) -> str:
    if len(password) < PASSWORD_MIN_LENGTH:
        raise PolicyError(f"password must have at least {PASSWORD_MIN_LENGTH} characters")
    if len(password) > PASSWORD_MAX_LENGTH:
        raise PolicyError(f"password must have at most {PASSWORD_MAX_LENGTH} characters")
    if not password.strip():
        raise PolicyError("password must not be only whitespace")
    if len(set(password)) < PASSWORD_MIN_DISTINCT:
        raise PolicyError(f"password must use at least {PASSWORD_MIN_DISTINCT} distinct characters")
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


# Refresh tokens


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_family_id() -> str:
    return secrets.token_urlsafe(16)
