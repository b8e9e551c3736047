"""JWT access tokens (RFC 8725 practice): one pinned asymmetric algorithm (ES256), a ``kid``
that must be known, explicit typing (``typ: at+jwt``, RFC 9068), and required ``exp``, ``nbf``,
``iat``, ``iss``, ``aud``, ``sub`` and ``jti``.

The users service signs; every service (and the gateway) verifies with the public key. Services
never trust an identity header: the principal comes only from a verified token.

Library: PyJWT (widely used, maintained, explicit ``algorithms=`` list so ``alg`` confusion is
impossible) with ``cryptography`` for the EC keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Depends, Request

from snapshoe.kernel.errors import Problem, unauthorized
from snapshoe.kernel.settings import Settings

ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a JWT "typ", not a secret)
REQUIRED_CLAIMS = ["exp", "nbf", "iat", "iss", "aud", "sub", "jti"]


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    email_verified: bool
    roles: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    jwk = {
        "crv": "P-256",
        "kty": "EC",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }
    # RFC 7638 thumbprint: a kid derived from the key itself, stable across restarts.
    thumb = hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode())
    return {**jwk, "kid": _b64url(thumb.digest()), "use": "sig", "alg": "ES256"}


def ensure_dev_keys(settings: Settings) -> bool:
    """Create an ES256 key pair where none is configured (dev only). Returns True if created."""
    priv, pub = settings.private_key_path, settings.public_key_path
    if priv.exists() and pub.exists():
        return False
    priv.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    priv.chmod(0o600)
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return True


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"{path} is not an EC public key")
    return key


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not an EC private key")
    return key


class TokenIssuer:
    def __init__(self, private_key: ec.EllipticCurvePrivateKey, settings: Settings) -> None:
        self._key = private_key
        self._settings = settings
        self.jwk = public_jwk(private_key.public_key())
        self.kid = self.jwk["kid"]

    def issue_access(
        self,
        user_id: str,
        *,
        email_verified: bool,
        roles: tuple[str, ...] | list[str] = (),
        now: float | None = None,
    ) -> tuple[str, int]:
        ttl = self._settings.access_token_ttl_seconds
        iat = int(now if now is not None else time.time())
        claims = {
            "iss": self._settings.jwt_issuer,
            "aud": self._settings.jwt_audience,
            "sub": user_id,
            "iat": iat,
            "nbf": iat,
            "exp": iat + ttl,
            "jti": secrets.token_urlsafe(12),
            "email_verified": email_verified,
            "roles": list(roles),
        }
        token = jwt.encode(
            claims,
            self._key,
            algorithm="ES256",
            headers={"kid": self.kid, "typ": ACCESS_TOKEN_TYPE},
        )
        return token, ttl


class TokenVerifier:
    def __init__(self, public_keys: list[ec.EllipticCurvePublicKey], settings: Settings) -> None:
        self._keys = {public_jwk(k)["kid"]: k for k in public_keys}
        self._settings = settings

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(k) for k in self._keys.values()]}

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise unauthorized("Malformed token") from exc
        key = self._keys.get(str(header.get("kid", "")))
        if key is None or header.get("alg") != "ES256":
            raise unauthorized("Unknown signing key or algorithm")
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise unauthorized("Not an access token")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["ES256"],  # pinned: never taken from the token
                audience=self._settings.jwt_audience,
                issuer=self._settings.jwt_issuer,
                leeway=self._settings.jwt_leeway_seconds,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as exc:
            raise unauthorized("Invalid token") from exc
        roles = claims.get("roles") or []
        if not isinstance(roles, list) or not isinstance(claims.get("email_verified"), bool):
            raise unauthorized("Invalid token claims")
        return Principal(
            user_id=str(claims["sub"]),
            email_verified=claims["email_verified"],
            roles=tuple(str(r) for r in roles),
        )


def build_verifier(settings: Settings) -> TokenVerifier:
    return TokenVerifier([load_public_key(settings.public_key_path)], settings)


def build_issuer(settings: Settings) -> TokenIssuer:
    return TokenIssuer(load_private_key(settings.private_key_path), settings)


# FastAPI dependencies. The verifier lives on app.state, built by the service's bootstrap.
# They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a thread pool,
# and that hand-off cost more than the ES256 check itself on the drop path.


async def current_principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized()
    verifier: TokenVerifier = request.app.state.verifier
    return verifier.verify(token.strip())


async def verified_principal(principal: Principal = Depends(current_principal)) -> Principal:
    if not principal.email_verified:
        raise Problem(
            403, "email_not_verified", "Email not verified", "Verify your email address first"
        )
    return principal


async def admin_principal(principal: Principal = Depends(current_principal)) -> Principal:
    if not principal.is_admin:
        raise Problem(403, "forbidden", detail="Admin role required")
    return principal
