"""Accounts against the running users service (through the gateway unless a test says why
not): signup, verification, resend, login, me, the cart's verified-email rule, admin creation."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from typing import Any

import httpx
import jwt
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.support.platform import Platform

from snapshoe.users.handlers import create_admin
from snapshoe.users.throttles import email_key

PASSWORD = "correct-Horse-battery-9"
PROBLEM = "application/problem+json"


def new_email(tag: str = "u") -> str:
    return f"{tag}-{secrets.token_hex(6)}@example.com"


async def sign_up(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.post(
        "/api/users", json={"email": email, "password": password, "name": "Test User"}
    )


def claims(token: str) -> dict[str, Any]:
    data: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return data


def assert_problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    assert r.json()["code"] == code, r.text


async def test_signup_verify_login_me(users_platform: Platform, gw: httpx.AsyncClient) -> None:
    email = new_email("Mixed").replace("Mixed", "MiXeD")
    r = await sign_up(gw, email)
    assert r.status_code == 202, r.text
    stored = email.lower()  # addresses are normalized to lowercase

    code = await users_platform.read_code(stored)  # mail goes out after the 202: wait for it
    msgs = await users_platform.messages(stored)
    assert [m["subject"] for m in msgs] == ["Your SnapShoe verification code"]
    assert code in msgs[0]["body"].splitlines()  # the code on its own line

    # Unverified users may log in; their token says so, and the cart refuses them.
    r = await gw.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    unverified = r.json()
    assert claims(unverified["access_token"])["email_verified"] is False
    r = await gw.get("/api/cart", headers={"Authorization": f"Bearer {unverified['access_token']}"})
    assert_problem(r, 403, "email_not_verified")

    r = await gw.post("/api/users/verification", json={"email": email, "code": code})
    assert r.status_code == 200, r.text
    assert r.json() == {"email_verified": True}

    r = await gw.post("/api/auth/login", json={"email": stored, "password": PASSWORD})
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert tokens["token_type"] == "Bearer"
    assert 0 < tokens["expires_in"] <= 900
    assert len(tokens["refresh_token"]) >= 43
    c = claims(tokens["access_token"])
    assert c["email_verified"] is True
    assert c["roles"] == []
    assert c["exp"] - c["iat"] <= 900

    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    r = await gw.get("/api/users/me", headers=auth)
    assert r.status_code == 200, r.text
    me = r.json()
    assert me == {
        "id": c["sub"],
        "email": stored,
        "name": "Test User",
        "email_verified": True,
        "roles": [],
        "lang": "ko",  # an addition (docs/api-additions.md): the default
    }

    # The session taken before the mailbox was proven ended with the verification (issue 12,
    # item 4: it may be someone who registered the address first); the login above is the
    # verified one.
    r = await gw.post("/api/auth/refresh", json={"refresh_token": unverified["refresh_token"]})
    assert_problem(r, 401, "invalid_token")
    r = await gw.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200, r.text
    assert claims(r.json()["access_token"])["email_verified"] is True

    # Verified users get their (empty) cart; tests/integration/users/test_cart.py has the rest.
    r = await gw.get("/api/cart", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == {"lines": [], "total_amount": 0, "degraded": False}

    # The code is single-use.
    r = await gw.post("/api/users/verification", json={"email": email, "code": code})
    assert_problem(r, 400, "verification_code_invalid")


async def test_me_and_cart_need_a_valid_token(
    gw: httpx.AsyncClient, direct: httpx.AsyncClient
) -> None:
    for client in (gw, direct):
        for path in ("/api/users/me", "/api/cart"):
            assert_problem(await client.get(path), 401, "unauthorized")
            r = await client.get(path, headers={"Authorization": "Bearer not.a.token"})
            assert_problem(r, 401, "unauthorized")


async def test_jwks_matches_token_kid(users_platform: Platform, gw: httpx.AsyncClient) -> None:
    user = await users_platform.verified_user(gw)
    r = await gw.get("/api/auth/jwks")
    assert r.status_code == 200, r.text
    keys = r.json()["keys"]
    kid = jwt.get_unverified_header(user.access_token)["kid"]
    key = next(k for k in keys if k["kid"] == kid)
    assert key["kty"] == "EC"
    assert key["alg"] == "ES256"
    assert "d" not in key
    # The JWKS key really verifies the token.
    public = jwt.PyJWK(key).key
    settings = users_platform.settings
    jwt.decode(
        user.access_token,
        public,
        algorithms=["ES256"],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )


async def test_readyz_checks_db_and_redis(direct: httpx.AsyncClient) -> None:
    r = await direct.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "redis": "ok"}


# Verification codes


async def test_five_wrong_codes_kill_the_code(
    users_platform: Platform, gw: httpx.AsyncClient
) -> None:
    email = new_email()
    assert (await sign_up(gw, email)).status_code == 202
    code = await users_platform.read_code(email)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(4):
        r = await gw.post("/api/users/verification", json={"email": email, "code": wrong})
        assert_problem(r, 400, "verification_code_invalid")
    r = await gw.post("/api/users/verification", json={"email": email, "code": wrong})
    assert_problem(r, 429, "too_many_attempts")
    # Dead: even the right code is refused now.
    r = await gw.post("/api/users/verification", json={"email": email, "code": code})
    assert_problem(r, 429, "too_many_attempts")


async def test_unknown_email_answers_like_a_wrong_code(gw: httpx.AsyncClient) -> None:
    """Same statuses and bodies, try by try, for a known and an unknown address."""
    known, unknown = new_email(), new_email()
    assert (await sign_up(gw, known)).status_code == 202
    for _ in range(6):
        answers = []
        for email in (known, unknown):
            r = await gw.post("/api/users/verification", json={"email": email, "code": "000000"})
            answers.append((r.status_code, r.json()))
        assert answers[0] == answers[1]
    assert answers[0][1]["code"] == "too_many_attempts"


async def test_concurrent_wrong_codes_are_all_counted(
    users_platform: Platform, direct: httpx.AsyncClient, users_db: AsyncEngine
) -> None:
    """The attempt counter is exact under concurrent guesses (row lock): 30 parallel wrong
    tries give exactly 4 x 400 and then 429s, and the counter stops at the limit's worth."""
    import asyncio

    email = new_email()
    assert (await sign_up(direct, email)).status_code == 202
    code = await users_platform.read_code(email)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    rs = await asyncio.gather(
        *(
            direct.post("/api/users/verification", json={"email": email, "code": wrong})
            for _ in range(30)
        )
    )
    statuses = sorted(r.status_code for r in rs)
    assert statuses.count(400) == 4
    assert statuses.count(429) == 26
    async with users_db.connect() as conn:
        attempts = (
            await conn.execute(
                text(
                    "SELECT c.attempts FROM verification_codes c JOIN users u ON u.id = c.user_id"
                    " WHERE u.email = :e"
                ),
                {"e": email},
            )
        ).scalar_one()
    assert attempts == 5


async def test_expired_code_is_refused(
    users_platform: Platform, gw: httpx.AsyncClient, users_db: AsyncEngine
) -> None:
    email = new_email()
    assert (await sign_up(gw, email)).status_code == 202
    code = await users_platform.read_code(email)
    async with users_db.begin() as conn:
        n = await conn.execute(
            text(
                "UPDATE verification_codes c JOIN users u ON u.id = c.user_id"
                " SET c.expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND WHERE u.email = :e"
            ),
            {"e": email},
        )
        assert n.rowcount == 1
    r = await gw.post("/api/users/verification", json={"email": email, "code": code})
    assert_problem(r, 400, "verification_code_expired")
    # A wrong code on an expired code says "invalid": expiry is only told to the code holder.
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    r = await gw.post("/api/users/verification", json={"email": email, "code": wrong})
    assert_problem(r, 400, "verification_code_invalid")


async def test_codes_are_stored_hashed(
    users_platform: Platform, gw: httpx.AsyncClient, users_db: AsyncEngine
) -> None:
    email = new_email()
    assert (await sign_up(gw, email)).status_code == 202
    code = await users_platform.read_code(email)
    async with users_db.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT c.code_hash, c.salt, u.password_hash FROM verification_codes c"
                    " JOIN users u ON u.id = c.user_id WHERE u.email = :e"
                ),
                {"e": email},
            )
        ).one()
    assert code not in row.code_hash
    assert len(row.code_hash) == 64
    assert row.password_hash.startswith("$argon2id$")
    assert PASSWORD not in row.password_hash


async def test_resend_throttle_and_new_code(
    users_platform: Platform, gw: httpx.AsyncClient, users_redis: Redis
) -> None:
    email = new_email()
    assert (await sign_up(gw, email)).status_code == 202
    first = await users_platform.read_code(email)

    # The signup mail counts: an immediate resend is throttled.
    r = await gw.post("/api/users/verification/resend", json={"email": email})
    assert_problem(r, 429, "too_many_requests")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert len(await users_platform.messages(email)) == 1

    # A minute later (the throttle key's expiry, fast-forwarded) a resend mails a new code.
    await users_redis.delete(email_key(users_platform.settings, "mail", email))
    r = await gw.post("/api/users/verification/resend", json={"email": email})
    assert r.status_code == 202, r.text
    second = await users_platform.read_code(email, after=1)
    assert len(await users_platform.messages(email)) == 2
    r = await gw.post("/api/users/verification/resend", json={"email": email})
    assert_problem(r, 429, "too_many_requests")

    if second != first:  # the old code died with the resend (1 in a million they are equal)
        r = await gw.post("/api/users/verification", json={"email": email, "code": first})
        assert_problem(r, 400, "verification_code_invalid")
    r = await gw.post("/api/users/verification", json={"email": email, "code": second})
    assert r.status_code == 200, r.text


# Enumeration: known and unknown addresses look the same


async def test_signup_same_answer_for_known_email(
    users_platform: Platform, gw: httpx.AsyncClient, users_redis: Redis
) -> None:
    user = await users_platform.verified_user(gw)
    # Within the minute of the signup mail, a second signup mails nothing (no mailbox flood).
    assert (await sign_up(gw, user.email)).status_code == 202
    assert len(await users_platform.messages(user.email)) == 1
    await users_redis.delete(email_key(users_platform.settings, "mail", user.email))
    fresh = new_email()
    r_known = await sign_up(gw, user.email, password="another-Password-1")
    r_new = await sign_up(gw, fresh)
    assert r_known.status_code == r_new.status_code == 202
    assert r_known.json() == r_new.json()
    assert r_known.headers["content-type"] == r_new.headers["content-type"]
    # The owner gets a notice, not a code (mailed after the answer); the password did not
    # change.
    deadline = time.monotonic() + 10
    while len(msgs := await users_platform.messages(user.email)) < 2:
        assert time.monotonic() < deadline, msgs
        await asyncio.sleep(0.05)
    assert len(msgs) == 2
    assert msgs[0]["subject"] != "Your SnapShoe verification code"
    assert "already" in msgs[0]["body"]
    r = await gw.post("/api/auth/login", json={"email": user.email, "password": user.password})
    assert r.status_code == 200
    r = await gw.post(
        "/api/auth/login", json={"email": user.email, "password": "another-Password-1"}
    )
    assert_problem(r, 401, "invalid_credentials")


async def test_resend_same_answer_for_known_email(
    users_platform: Platform, gw: httpx.AsyncClient, users_redis: Redis
) -> None:
    known = new_email()
    assert (await sign_up(gw, known)).status_code == 202
    await users_redis.delete(email_key(users_platform.settings, "mail", known))
    unknown = new_email()
    first = [
        await gw.post("/api/users/verification/resend", json={"email": e}) for e in (known, unknown)
    ]
    again = [
        await gw.post("/api/users/verification/resend", json={"email": e}) for e in (known, unknown)
    ]
    for pair, status in ((first, 202), (again, 429)):
        assert pair[0].status_code == pair[1].status_code == status
        assert pair[0].json() == pair[1].json()
        assert pair[0].headers["content-type"] == pair[1].headers["content-type"]
    assert await users_platform.messages(unknown) == []


async def test_login_same_answer_for_unknown_email(
    users_platform: Platform, direct: httpx.AsyncClient
) -> None:
    """Same status and body, and comparable time (a dummy argon2 verify for unknown
    addresses). Direct to the service: the gateway's login rate limit is not under test."""
    user = await users_platform.verified_user(direct)
    cases = {
        "wrong_password": {"email": user.email, "password": "wrong-password-123"},
        "unknown_email": {"email": new_email(), "password": "wrong-password-123"},
        "malformed_email": {"email": "not an email", "password": "wrong-password-123"},
    }
    bodies = {}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(5):
        for name, body in cases.items():
            start = time.perf_counter()
            r = await direct.post("/api/auth/login", json=body)
            times[name].append(time.perf_counter() - start)
            assert_problem(r, 401, "invalid_credentials")
            bodies[name] = r.json()
    assert bodies["wrong_password"] == bodies["unknown_email"] == bodies["malformed_email"]
    known = statistics.median(times["wrong_password"])
    unknown = statistics.median(times["unknown_email"])
    # argon2 dominates both; without the dummy verify the unknown case would be ~10x faster.
    assert 0.5 < unknown / known < 2, (known, unknown)


# Admin


async def test_create_admin_creates_then_promotes(
    users_platform: Platform, direct: httpx.AsyncClient
) -> None:
    settings = users_platform.settings
    email = new_email("admin")
    made = await create_admin(settings, email.upper(), "admin-Password-1")
    assert made.created
    assert made.email == email
    r = await direct.post("/api/auth/login", json={"email": email, "password": "admin-Password-1"})
    assert r.status_code == 200, r.text
    c = claims(r.json()["access_token"])
    assert c["roles"] == ["admin"]
    assert c["email_verified"] is True

    # Promote an existing, verified buyer: the password is replaced, the role added.
    buyer = await users_platform.verified_user(direct)
    promoted = await create_admin(settings, buyer.email, "new-admin-Pass-2")
    assert not promoted.created
    r = await direct.post(
        "/api/auth/login", json={"email": buyer.email, "password": "new-admin-Pass-2"}
    )
    assert r.status_code == 200, r.text
    me = await direct.get(
        "/api/users/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}
    )
    assert me.json()["roles"] == ["admin"]
    assert me.json()["email_verified"] is True

    from snapshoe.users.domain import PolicyError

    with pytest.raises(PolicyError):
        await create_admin(settings, new_email(), "short")


async def test_promotion_revokes_every_session(
    users_platform: Platform, gw: httpx.AsyncClient
) -> None:
    """Issue 12, item 3: whoever held a refresh token of the account before the promotion
    (for instance someone who registered the address first) never gets an admin token."""
    user = await users_platform.verified_user(gw)
    second = await users_platform.login(user.email, user.password, gw)  # another session
    await create_admin(users_platform.settings, user.email, "new-admin-Pass-2")
    for session in (user, second):
        r = await gw.post("/api/auth/refresh", json={"refresh_token": session.refresh_token})
        assert_problem(r, 401, "invalid_token")
    # Not even once: the family is dead, so a replay yields nothing either.
    r = await gw.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    assert_problem(r, 401, "invalid_token")
    r = await gw.post("/api/auth/login", json={"email": user.email, "password": user.password})
    assert_problem(r, 401, "invalid_credentials")  # the old password went with it
    r = await gw.post("/api/auth/login", json={"email": user.email, "password": "new-admin-Pass-2"})
    assert r.status_code == 200, r.text
    assert claims(r.json()["access_token"])["roles"] == ["admin"]


async def test_promoting_an_unverified_account_is_refused(
    users_platform: Platform, gw: httpx.AsyncClient
) -> None:
    from snapshoe.users.domain import PolicyError

    email = new_email("squatter")
    assert (await sign_up(gw, email)).status_code == 202
    r = await gw.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    held = r.json()["refresh_token"]
    with pytest.raises(PolicyError, match="not verified"):
        await create_admin(users_platform.settings, email, "new-admin-Pass-2")
    # Nothing changed: same password, no role, still unverified.
    r = await gw.post("/api/auth/refresh", json={"refresh_token": held})
    assert r.status_code == 200, r.text
    c = claims(r.json()["access_token"])
    assert c["roles"] == []
    assert c["email_verified"] is False
    r = await gw.post("/api/auth/login", json={"email": email, "password": "new-admin-Pass-2"})
    assert_problem(r, 401, "invalid_credentials")
