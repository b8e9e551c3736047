"""Forged and broken access tokens, shared by the gateway and service tests.

Every token from :func:`token_attacks` must be refused with 401 wherever a token is checked:
by the gateway (``jwt_verify`` and its ACLs) and by each service called directly (PyJWT in
``snapshoe.kernel.auth``). Usage::

    for name, token in token_attacks(private_key, settings):
        r = await client.get(url, headers=bearer(token))
        assert r.status_code == 401, name

``private_key`` is the platform's real signing key (``kernel.auth.load_private_key(
settings.private_key_path)``), so each attack differs from a valid token in exactly one way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from snapshoe.kernel.auth import ACCESS_TOKEN_TYPE, public_jwk
from snapshoe.kernel.settings import Settings

ATTACK_NAMES: tuple[str, ...] = (
    "no_token",
    "alg_none",
    "hs256_public_key_as_secret",
    "expired",
    "nbf_in_future",
    "wrong_iss",
    "wrong_aud",
    "unknown_kid",
    "real_key_unknown_kid",
    "tampered_payload",
    "missing_exp",
    "missing_nbf",
    "wrong_typ",
    "signature_stripped",
    "garbage",
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_b64(obj: dict[str, Any]) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


def claims(settings: Settings, sub: str = "attacker", now: int | None = None) -> dict[str, Any]:
    """The claims of a valid access token (as ``kernel.auth.TokenIssuer`` writes them)."""
    iat = int(now if now is not None else time.time())
    return {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": sub,
        "iat": iat,
        "nbf": iat,
        "exp": iat + 300,
        "jti": secrets.token_urlsafe(12),
        "email_verified": True,
        "roles": ["admin"],
    }


def sign(
    private_key: ec.EllipticCurvePrivateKey,
    payload: dict[str, Any],
    *,
    kid: str | None = None,
    typ: str = ACCESS_TOKEN_TYPE,
) -> str:
    kid = kid or public_jwk(private_key.public_key())["kid"]
    return jwt.encode(payload, private_key, algorithm="ES256", headers={"kid": kid, "typ": typ})


def valid_token(
    private_key: ec.EllipticCurvePrivateKey, settings: Settings, sub: str = "attacker"
) -> str:
    """A token every verifier must accept (the control for the attacks)."""
    return sign(private_key, claims(settings, sub))


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def token_attacks(
    private_key: ec.EllipticCurvePrivateKey,
    settings: Settings,
    sub: str = "attacker",
    public_key_pem: bytes | None = None,
) -> list[tuple[str, str | None]]:
    """``(name, token)`` pairs, in :data:`ATTACK_NAMES` order; ``None`` means no header.

    ``public_key_pem`` is what the HS256 attack uses as the HMAC secret (the classic
    algorithm-confusion attack); by default the PEM of ``private_key``'s public half.
    """
    now = int(time.time())
    kid = public_jwk(private_key.public_key())["kid"]
    good = claims(settings, sub, now)
    header = {"alg": "ES256", "kid": kid, "typ": ACCESS_TOKEN_TYPE}
    valid = sign(private_key, good)
    head_b64, _, sig_b64 = valid.split(".")

    pem = public_key_pem or private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_header = _json_b64({"alg": "HS256", "kid": kid, "typ": ACCESS_TOKEN_TYPE})
    hs_body = _json_b64(good)
    hs_sig = _b64(hmac.new(pem, f"{hs_header}.{hs_body}".encode(), hashlib.sha256).digest())

    other_key = ec.generate_private_key(ec.SECP256R1())
    without_exp = {k: v for k, v in good.items() if k != "exp"}
    without_nbf = {k: v for k, v in good.items() if k != "nbf"}
    escalated = {**good, "sub": "someone-else", "roles": ["admin", "root"]}

    attacks: dict[str, str | None] = {
        "no_token": None,
        "alg_none": f"{_json_b64({**header, 'alg': 'none'})}.{_json_b64(good)}.",
        "hs256_public_key_as_secret": f"{hs_header}.{hs_body}.{hs_sig}",
        "expired": sign(
            private_key, {**good, "iat": now - 1000, "nbf": now - 1000, "exp": now - 60}
        ),
        "nbf_in_future": sign(private_key, {**good, "nbf": now + 600, "exp": now + 900}),
        "wrong_iss": sign(private_key, {**good, "iss": "https://evil.example"}),
        "wrong_aud": sign(private_key, {**good, "aud": "some-other-api"}),
        # An attacker's own key, announced under its own kid.
        "unknown_kid": sign(other_key, good),
        # The real key's signature, but a kid nobody published.
        "real_key_unknown_kid": sign(private_key, good, kid="rotated-out-" + kid[:8]),
        # A valid signature over other claims.
        "tampered_payload": f"{head_b64}.{_json_b64(escalated)}.{sig_b64}",
        "missing_exp": sign(private_key, without_exp),
        "missing_nbf": sign(private_key, without_nbf),
        "wrong_typ": sign(private_key, good, typ="JWT"),
        "signature_stripped": f"{head_b64}.{valid.split('.')[1]}.",
        "garbage": "not-a-jwt",
    }
    assert tuple(attacks) == ATTACK_NAMES
    return list(attacks.items())
