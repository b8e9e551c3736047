"""Admission tokens: what the waiting room gives an admitted buyer, to place one order with.

``a1.<ticket id>.<admitted_until, epoch ms>.<signature>``, the signature an HMAC-SHA256 of the
ticket, buyer, product and deadline, keyed by a key derived from the internal token (a secret
only the services hold, refused at start-up in production when it is a public default). The
signature lets products turn away a forged or altered token without a database read; the
ticket's row decides the rest (admitted, not lapsed, not used: single use), so a token is only
as good as the admission it names. Pure: no I/O."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

PREFIX = "a1"
_CONTEXT = b"snapshoe admission token v1"


@dataclass(frozen=True, slots=True)
class Admission:
    ticket_id: str
    until_ms: int


def signing_key(internal_token: str) -> bytes:
    """A key of its own for admissions, derived from the services' shared secret."""
    return hmac.new(internal_token.encode(), _CONTEXT, hashlib.sha256).digest()


def _signature(key: bytes, ticket_id: str, buyer_id: str, product_id: str, until_ms: int) -> str:
    message = f"{ticket_id}|{buyer_id}|{product_id}|{until_ms}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(key: bytes, ticket_id: str, buyer_id: str, product_id: str, until_ms: int) -> str:
    sig = _signature(key, ticket_id, buyer_id, product_id, until_ms)
    return f"{PREFIX}.{ticket_id}.{until_ms}.{sig}"


def verify(key: bytes, token: str, buyer_id: str, product_id: str, now_ms: int) -> Admission | None:
    """The admission ``token`` names, if it was signed for this buyer and product and has not
    lapsed; None otherwise (forged, altered, someone else's, another product's, too late)."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != PREFIX or not parts[2].isdigit():
        return None
    ticket_id, until_ms = parts[1], int(parts[2])
    expected = _signature(key, ticket_id, buyer_id, product_id, until_ms)
    if not hmac.compare_digest(expected, parts[3]):
        return None
    if until_ms <= now_ms:
        return None
    return Admission(ticket_id, until_ms)
