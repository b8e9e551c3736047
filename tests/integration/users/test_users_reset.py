"""Password reset, verification ending earlier sessions, and the expiry of accounts left
unverified (issue 12, item 4: pre-registration takeover). Through the gateway, with the real
mail sink, unless a test says why not."""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.integration.users.test_users_accounts import (
    PASSWORD,
    assert_problem,
    claims,
    new_email,
    sign_up,
)
from tests.support.platform import Platform

from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.db import create_sessions
from snapshoe.users.handlers import expire_unverified_accounts
from snapshoe.users.mail import RESET_SUBJECT
from snapshoe.users.throttles import email_key

NEW_PASSWORD = "brand-New-Passphrase-7"
RESET = "/api/auth/password-reset"
CONFIRM = "/api/auth/password-reset/confirm"


async def reset_code(platform: Platform, email: str, timeout: float = 10) -> str:
    """The newest reset code mailed to ``email`` (the mail goes out after the 202)."""
    deadline = time.monotonic() + timeout
    while True:
        for msg in await platform.messages(email):
            if msg["subject"] == RESET_SUBJECT:
                return await platform.read_code(email)
        assert time.monotonic() < deadline, await platform.messages(email)
        await asyncio.sleep(0.05)


def other_code(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def test_reset_flow_revokes_sessions_and_changes_the_password(
    users_platform: Platform, gw: httpx.AsyncClient
) -> None:
    user = await users_platform.verified_user(gw)
    r = await gw.post(RESET, json={"email": user.email})
    assert r.status_code == 202, r.text
    code = await reset_code(users_platform, user.email)

    r = await gw.post(
        CONFIRM, json={"email": user.email, "code": code, "new_password": NEW_PASSWORD}
    )
    assert r.status_code == 204, r.text
    r = await gw.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    assert_problem(r, 401, "invalid_token")
    r = await gw.post("/api/auth/login", json={"email": user.email, "password": user.password})
    assert_problem(r, 401, "invalid_credentials")
    r = await gw.post("/api/auth/login", json={"email": user.email, "password": NEW_PASSWORD})
    assert r.status_code == 200, r.text
    assert claims(r.json()["access_token"])["email_verified"] is True
    # The code is single-use.
    r = await gw.post(
        CONFIRM, json={"email": user.email, "code": code, "new_password": "yet-Another-pass-8"}
    )
    assert_problem(r, 400, "reset_code_invalid")


async def test_reset_of_an_unknown_address_answers_the_same_and_mails_nothing(
    users_platform: Platform, direct: httpx.AsyncClient
) -> None:
    """Same status, body and (about) time; no mail. Direct to the service, five addresses
    of each kind (each address may ask once a minute), so the gateway's limits stay out."""
    known = []
    for _ in range(5):
        email = new_email("known")
        assert (await sign_up(direct, email)).status_code == 202
        known.append(email)
    unknown = [new_email("nobody") for _ in range(5)]
    times: dict[str, list[float]] = {"known": [], "unknown": []}
    bodies = {}
    for k, u in zip(known, unknown, strict=True):
        for kind, email in (("known", k), ("unknown", u)):
            start = time.perf_counter()
            r = await direct.post(RESET, json={"email": email})
            times[kind].append(time.perf_counter() - start)
            assert r.status_code == 202, r.text
            bodies[kind] = (r.json(), r.headers["content-type"])
    assert bodies["known"] == bodies["unknown"]
    for email in known:
        await reset_code(users_platform, email)  # the mail did go out, after the answer
    await asyncio.sleep(0.5)
    for email in unknown:
        assert await users_platform.messages(email) == []
    # Mail is sent after the answer in both branches: inline SMTP costs ~20-30 ms here.
    k, u = statistics.median(times["known"]), statistics.median(times["unknown"])
    assert k < u + 0.015, (times, k, u)


async def test_reset_is_throttled_per_address_and_per_day(
    users_platform: Platform, gw: httpx.AsyncClient, users_redis: Redis
) -> None:
    settings = users_platform.settings
    user = await users_platform.verified_user(gw)
    unknown = new_email("nobody")
    for email in (user.email, unknown):
        assert (await gw.post(RESET, json={"email": email})).status_code == 202
    answers = [await gw.post(RESET, json={"email": e}) for e in (user.email, unknown)]
    for r in answers:
        assert_problem(r, 429, "too_many_requests")
        assert 1 <= int(r.headers["retry-after"]) <= 60
    assert answers[0].json() == answers[1].json()

    # A minute later (fast-forwarded) again, up to the day's cap.
    for _ in range(settings.password_reset_daily_limit - 1):
        await users_redis.delete(email_key(settings, "reset_mail", user.email))
        assert (await gw.post(RESET, json={"email": user.email})).status_code == 202
    await users_redis.delete(email_key(settings, "reset_mail", user.email))
    r = await gw.post(RESET, json={"email": user.email})
    assert_problem(r, 429, "too_many_requests")
    assert int(r.headers["retry-after"]) > 60  # the day's cap, not the minute's
    await asyncio.sleep(0.5)
    resets = [m for m in await users_platform.messages(user.email) if m["subject"] == RESET_SUBJECT]
    assert len(resets) == settings.password_reset_daily_limit


async def test_five_wrong_reset_codes_kill_the_code(
    users_platform: Platform, gw: httpx.AsyncClient
) -> None:
    user = await users_platform.verified_user(gw)
    unknown = new_email("nobody")
    for email in (user.email, unknown):
        assert (await gw.post(RESET, json={"email": email})).status_code == 202
    code = await reset_code(users_platform, user.email)
    wrong = other_code(code)
    for attempt in range(5):
        answers = []
        for email in (user.email, unknown):
            r = await gw.post(
                CONFIRM, json={"email": email, "code": wrong, "new_password": NEW_PASSWORD}
            )
            answers.append((r.status_code, r.json()))
            if attempt < 4:
                assert_problem(r, 400, "reset_code_invalid")
            else:
                assert_problem(r, 429, "too_many_attempts")
        assert answers[0] == answers[1]  # an unknown address looks like a wrong code
    r = await gw.post(
        CONFIRM, json={"email": user.email, "code": code, "new_password": NEW_PASSWORD}
    )
    assert_problem(r, 429, "too_many_attempts")
    r = await gw.post("/api/auth/refresh", json={"refresh_token": user.refresh_token})
    assert r.status_code == 200, r.text  # nothing changed
    r = await gw.post("/api/auth/login", json={"email": user.email, "password": user.password})
    assert r.status_code == 200, r.text


async def test_expired_reset_code_is_refused(
    users_platform: Platform, gw: httpx.AsyncClient, users_db: AsyncEngine
) -> None:
    user = await users_platform.verified_user(gw)
    assert (await gw.post(RESET, json={"email": user.email})).status_code == 202
    code = await reset_code(users_platform, user.email)
    async with users_db.begin() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT c.code_hash FROM password_reset_codes c JOIN users u"
                    " ON u.id = c.user_id WHERE u.email = :e"
                ),
                {"e": user.email},
            )
        ).one()
        assert code not in row.code_hash  # stored hashed
        assert len(row.code_hash) == 64
        n = await conn.execute(
            text(
                "UPDATE password_reset_codes c JOIN users u ON u.id = c.user_id"
                " SET c.expires_at = UTC_TIMESTAMP(6) - INTERVAL 1 SECOND WHERE u.email = :e"
            ),
            {"e": user.email},
        )
        assert n.rowcount == 1
    r = await gw.post(
        CONFIRM, json={"email": user.email, "code": code, "new_password": NEW_PASSWORD}
    )
    assert_problem(r, 400, "reset_code_expired")
    r = await gw.post("/api/auth/login", json={"email": user.email, "password": user.password})
    assert r.status_code == 200, r.text


async def test_reset_refuses_a_weak_password(
    users_platform: Platform, gw: httpx.AsyncClient
) -> None:
    user = await users_platform.verified_user(gw)
    assert (await gw.post(RESET, json={"email": user.email})).status_code == 202
    code = await reset_code(users_platform, user.email)
    for weak in ("short", "aaaaaaaaaaaa"):
        r = await gw.post(CONFIRM, json={"email": user.email, "code": code, "new_password": weak})
        assert_problem(r, 422, "validation_error")
    # The code was not spent by the refusals.
    r = await gw.post(
        CONFIRM, json={"email": user.email, "code": code, "new_password": NEW_PASSWORD}
    )
    assert r.status_code == 204, r.text


async def test_pre_registration_takeover_is_undone(
    users_platform: Platform, gw: httpx.AsyncClient, users_redis: Redis
) -> None:
    """An attacker registers the victim's address with their own password and logs in. The
    owner verifies the code that reached their mailbox: the attacker's session dies. The
    owner resets the password: the attacker's password no longer logs in."""
    victim = new_email("victim")
    attacker_password = "attacker-Chosen-pass-1"
    assert (await sign_up(gw, victim, attacker_password)).status_code == 202
    r = await gw.post("/api/auth/login", json={"email": victim, "password": attacker_password})
    assert r.status_code == 200, r.text
    attacker = r.json()

    # The owner's own sign-up is told "already registered" (a notice, not a code).
    await users_redis.delete(email_key(users_platform.settings, "mail", victim))
    assert (await sign_up(gw, victim, PASSWORD)).status_code == 202
    code = await users_platform.read_code(victim)  # the code of the attacker's sign-up
    r = await gw.post("/api/users/verification", json={"email": victim, "code": code})
    assert r.status_code == 200, r.text
    r = await gw.post("/api/auth/refresh", json={"refresh_token": attacker["refresh_token"]})
    assert_problem(r, 401, "invalid_token")

    # The attacker logs in again with the password they chose (the residual risk until the
    # owner resets: docs/accounts.md); the reset ends that session and that password.
    r = await gw.post("/api/auth/login", json={"email": victim, "password": attacker_password})
    assert r.status_code == 200, r.text
    attacker = r.json()
    assert (await gw.post(RESET, json={"email": victim})).status_code == 202
    code = await reset_code(users_platform, victim)
    r = await gw.post(CONFIRM, json={"email": victim, "code": code, "new_password": PASSWORD})
    assert r.status_code == 204, r.text
    r = await gw.post("/api/auth/refresh", json={"refresh_token": attacker["refresh_token"]})
    assert_problem(r, 401, "invalid_token")
    r = await gw.post("/api/auth/login", json={"email": victim, "password": attacker_password})
    assert_problem(r, 401, "invalid_credentials")
    r = await gw.post("/api/auth/login", json={"email": victim, "password": PASSWORD})
    assert r.status_code == 200, r.text


async def test_reset_alone_proves_the_mailbox(
    users_platform: Platform, gw: httpx.AsyncClient
) -> None:
    """The owner may skip verification and reset directly: the reset verifies the address
    and ends the attacker's session."""
    victim = new_email("victim")
    attacker_password = "attacker-Chosen-pass-1"
    assert (await sign_up(gw, victim, attacker_password)).status_code == 202
    r = await gw.post("/api/auth/login", json={"email": victim, "password": attacker_password})
    attacker = r.json()
    await users_platform.read_code(victim)  # the sign-up mail went out first
    assert (await gw.post(RESET, json={"email": victim})).status_code == 202
    code = await reset_code(users_platform, victim)
    r = await gw.post(CONFIRM, json={"email": victim, "code": code, "new_password": PASSWORD})
    assert r.status_code == 204, r.text
    r = await gw.post("/api/auth/refresh", json={"refresh_token": attacker["refresh_token"]})
    assert_problem(r, 401, "invalid_token")
    r = await gw.post("/api/auth/login", json={"email": victim, "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert claims(r.json()["access_token"])["email_verified"] is True


async def _age(users_db: AsyncEngine, email: str, hours: float) -> None:
    async with users_db.begin() as conn:
        n = await conn.execute(
            text(
                "UPDATE users SET created_at = UTC_TIMESTAMP(6) - INTERVAL :s SECOND"
                " WHERE email = :e"
            ),
            {"s": int(hours * 3600), "e": email},
        )
        assert n.rowcount == 1


async def _user_count(users_db: AsyncEngine, email: str) -> int:
    async with users_db.connect() as conn:
        n = (
            await conn.execute(text("SELECT COUNT(*) FROM users WHERE email = :e"), {"e": email})
        ).scalar_one()
    return int(n)


async def test_unverified_accounts_expire(
    users_platform: Platform, gw: httpx.AsyncClient, users_db: AsyncEngine
) -> None:
    """The users worker's step deletes accounts left unverified past the TTL (with their
    sessions), so the address can be registered anew; verified accounts stay."""
    ttl = users_platform.settings.unverified_account_ttl_hours
    squatted = new_email("squatted")
    assert (await sign_up(gw, squatted, "squatter-Pass-1")).status_code == 202
    r = await gw.post("/api/auth/login", json={"email": squatted, "password": "squatter-Pass-1"})
    held = r.json()["refresh_token"]
    young = new_email("young")
    assert (await sign_up(gw, young)).status_code == 202
    verified = await users_platform.verified_user(gw)
    await _age(users_db, squatted, ttl + 1)
    await _age(users_db, verified.email, ttl + 1)

    deleted = await expire_unverified_accounts(
        create_sessions(users_db), now=utcnow(), ttl_hours=ttl
    )
    assert deleted >= 1
    assert await _user_count(users_db, squatted) == 0
    assert await _user_count(users_db, young) == 1
    assert await _user_count(users_db, verified.email) == 1
    r = await gw.post("/api/auth/refresh", json={"refresh_token": held})
    assert_problem(r, 401, "invalid_token")
    r = await gw.post("/api/auth/login", json={"email": squatted, "password": "squatter-Pass-1"})
    assert_problem(r, 401, "invalid_credentials")

    # The address is free again: the owner's sign-up is a fresh one.
    before = len(await users_platform.messages(squatted))
    assert (await sign_up(gw, squatted, PASSWORD)).status_code == 202
    code = await users_platform.read_code(squatted, after=before)
    r = await gw.post("/api/users/verification", json={"email": squatted, "code": code})
    assert r.status_code == 200, r.text
    r = await gw.post("/api/auth/login", json={"email": squatted, "password": PASSWORD})
    assert r.status_code == 200, r.text


async def test_signup_over_an_expired_unverified_account_is_fresh(
    users_platform: Platform, gw: httpx.AsyncClient, users_db: AsyncEngine, users_redis: Redis
) -> None:
    """Before the worker ran: the sign-up itself replaces the expired account."""
    ttl = users_platform.settings.unverified_account_ttl_hours
    email = new_email("squatted")
    assert (await sign_up(gw, email, "squatter-Pass-1")).status_code == 202
    r = await gw.post("/api/auth/login", json={"email": email, "password": "squatter-Pass-1"})
    held = r.json()["refresh_token"]
    await _age(users_db, email, ttl + 1)
    await users_redis.delete(email_key(users_platform.settings, "mail", email))
    assert (await sign_up(gw, email, PASSWORD)).status_code == 202
    # Mail goes out after the answer (the account mail queue): wait for the second code.
    msgs = await users_platform.messages(email)
    for _ in range(100):
        if len(msgs) >= 2:
            break
        await asyncio.sleep(0.1)
        msgs = await users_platform.messages(email)
    assert [m["subject"] for m in msgs][:1] == ["Your SnapShoe verification code"]
    assert len(msgs) == 2
    code = await users_platform.read_code(email)
    r = await gw.post("/api/users/verification", json={"email": email, "code": code})
    assert r.status_code == 200, r.text
    r = await gw.post("/api/auth/refresh", json={"refresh_token": held})
    assert_problem(r, 401, "invalid_token")
    r = await gw.post("/api/auth/login", json={"email": email, "password": "squatter-Pass-1"})
    assert_problem(r, 401, "invalid_credentials")
    r = await gw.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
