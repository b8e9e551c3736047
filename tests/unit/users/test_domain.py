"""Pure account rules: email normalization, password policy, codes, refresh tokens."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapshoe.users.domain import (
    CodeOutcome,
    PolicyError,
    StoredCode,
    check_code,
    check_name,
    check_password,
    format_roles,
    generate_code,
    hash_code,
    hash_refresh_token,
    issue_code,
    loose_email_key,
    new_refresh_token,
    normalize_email,
    parse_roles,
    password_problem,
)

NOW = datetime(2025, 1, 1, 12, 0, 0)


class TestEmail:
    def test_lowercased_and_trimmed(self) -> None:
        assert normalize_email("  Foo.Bar@Example.COM ") == "foo.bar@example.com"

    @pytest.mark.parametrize(
        "bad", ["", "plain", "a@", "@b.com", "a b@c.com", "a@b..com", "x@localhost", "a@b@c.com"]
    )
    def test_invalid_refused(self, bad: str) -> None:
        with pytest.raises(PolicyError):
            normalize_email(bad)

    def test_too_long_refused(self) -> None:
        with pytest.raises(PolicyError):
            normalize_email("a" * 250 + "@example.com")

    def test_loose_key_never_raises(self) -> None:
        assert loose_email_key(" NOT-AN-EMAIL ") == "not-an-email"
        assert loose_email_key("A@Example.com") == "a@example.com"


class TestPassword:
    @pytest.mark.parametrize(
        "good", ["correct-horse", "brisk-otter-42", "ünïcødé-pässwörd", "a b c d e f"]
    )
    def test_accepted(self, good: str) -> None:
        assert check_password(good) == good

    @pytest.mark.parametrize(
        ("bad", "why"),
        [
            ("short1!", "at least 10"),
            ("x" * 129 + "abc", "at most 128"),
            ("aaaaaaaaaaaa", "distinct"),
            ("1212121212", "distinct"),
            (" " * 12, "whitespace"),
        ],
    )
    def test_refused(self, bad: str, why: str) -> None:
        with pytest.raises(PolicyError, match=why):
            check_password(bad)

    def test_bounds_are_inclusive(self) -> None:
        check_password("abcd" * 2 + "ef")  # 10
        check_password(("abcd" * 32)[:128])  # 128


class TestCommonPasswords:
    """Issue 12 item 10: the shipped list, case-insensitively, and decorated with digits."""

    @pytest.mark.parametrize(
        "weak",
        [
            "password123",
            "PASSWORD123",
            "Password123!",
            "qwertyuiop",
            "1q2w3e4r5t",
            "iloveyou2024",
            "!!dragon2024!!",
            "football1234",
        ],
    )
    def test_refused_as_too_common(self, weak: str) -> None:
        problem = password_problem(weak)
        assert problem is not None
        assert "too common" in problem
        with pytest.raises(PolicyError, match="too common"):
            check_password(weak)

    @pytest.mark.parametrize(
        "good",
        [
            "correct-horse-9",  # README walk-through
            "correct-Horse-battery-9",  # tests' buyers
            "admin-Password-1",
            "new-admin-Pass-2",
            "another-Password-1",
        ],
    )
    def test_passphrases_pass(self, good: str) -> None:
        assert password_problem(good, "someone@example.com") is None

    def test_the_account_address_is_refused(self) -> None:
        assert password_problem("ada.lovelace@example.com", "ada.lovelace@example.com")
        assert password_problem("Ada.Lovelace", "ada.lovelace@example.com")
        assert password_problem("ada.lovelace2024", "ada.lovelace@example.com")
        assert password_problem("ada.lovelace2024", "grace@example.com") is None

    def test_the_list_is_package_data(self) -> None:
        from snapshoe.users.domain import common_passwords

        assert len(common_passwords()) > 19_000


class TestName:
    def test_trimmed(self) -> None:
        assert check_name("  Kim  ") == "Kim"

    @pytest.mark.parametrize("bad", ["", "   ", "x" * 101, "bad\x00name", "new\nline"])
    def test_refused(self, bad: str) -> None:
        with pytest.raises(PolicyError):
            check_name(bad)


def test_roles_round_trip() -> None:
    assert parse_roles("") == ()
    assert parse_roles(format_roles(["admin", "buyer", "admin"])) == ("admin", "buyer")


class TestCodes:
    def test_six_digits(self) -> None:
        for _ in range(500):
            assert re.fullmatch(r"[0-9]{6}", generate_code())

    def test_codes_vary(self) -> None:
        # 200 draws from a million values: a repeat-heavy generator would show here.
        assert len({generate_code() for _ in range(200)}) > 190

    def test_stored_hashed_with_salt(self) -> None:
        a = issue_code(NOW, 600)
        b = issue_code(NOW, 600)
        assert a.code not in a.code_hash
        assert a.salt != b.salt
        # The same code under another salt hashes differently.
        assert hash_code(a.code, a.salt) != hash_code(a.code, b.salt)
        assert a.expires_at == NOW + timedelta(minutes=10)

    def _stored(self, code: str, *, attempts: int = 0, ttl: int = 600) -> StoredCode:
        salt = "00" * 16
        return StoredCode(hash_code(code, salt), salt, NOW + timedelta(seconds=ttl), attempts)

    def test_right_code_in_time(self) -> None:
        assert check_code(self._stored("123456"), "123456", NOW, 5) is CodeOutcome.VERIFIED

    def test_wrong_code(self) -> None:
        assert check_code(self._stored("123456"), "654321", NOW, 5) is CodeOutcome.INVALID

    def test_fifth_wrong_try_kills(self) -> None:
        stored = self._stored("123456", attempts=4)
        assert check_code(stored, "000000", NOW, 5) is CodeOutcome.KILLED

    def test_dead_code_refuses_even_the_right_code(self) -> None:
        stored = self._stored("123456", attempts=5)
        assert check_code(stored, "123456", NOW, 5) is CodeOutcome.DEAD

    def test_expired_only_told_to_the_holder_of_the_right_code(self) -> None:
        later = NOW + timedelta(seconds=601)
        assert check_code(self._stored("123456"), "123456", later, 5) is CodeOutcome.EXPIRED
        assert check_code(self._stored("123456"), "111111", later, 5) is CodeOutcome.INVALID

    def test_expiry_boundary(self) -> None:
        stored = self._stored("123456", ttl=600)
        at = NOW + timedelta(seconds=600)
        assert check_code(stored, "123456", at - timedelta(microseconds=1), 5) is (
            CodeOutcome.VERIFIED
        )
        assert check_code(stored, "123456", at, 5) is CodeOutcome.EXPIRED

    @given(st.lists(st.from_regex(r"[0-9]{6}", fullmatch=True), min_size=1, max_size=12))
    def test_attempt_sequence(self, guesses: list[str]) -> None:
        """Simulate the counter the repository keeps: at most 5 wrong answers are judged;
        after that nothing, not even the right code, verifies."""
        stored = self._stored("424242")
        attempts = 0
        for guess in guesses:
            outcome = check_code(
                StoredCode(stored.code_hash, stored.salt, stored.expires_at, attempts),
                guess,
                NOW,
                5,
            )
            if attempts >= 5:
                assert outcome is CodeOutcome.DEAD
            elif guess == "424242":
                assert outcome is CodeOutcome.VERIFIED
                return
            else:
                assert outcome in (CodeOutcome.INVALID, CodeOutcome.KILLED)
                assert (outcome is CodeOutcome.KILLED) == (attempts == 4)
                attempts += 1


def test_refresh_tokens_random_and_hashed() -> None:
    tokens = {new_refresh_token() for _ in range(100)}
    assert len(tokens) == 100
    token = tokens.pop()
    assert len(token) >= 43
    assert re.fullmatch(r"[0-9a-f]{64}", hash_refresh_token(token))
    assert hash_refresh_token(token) == hash_refresh_token(token)
