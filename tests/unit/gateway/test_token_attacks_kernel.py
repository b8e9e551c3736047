"""The shared attack list against the kernel's verifier (what every service runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.support.tokens import ATTACK_NAMES, token_attacks, valid_token

from snapshoe.kernel.auth import (
    TokenIssuer,
    build_verifier,
    ensure_dev_keys,
    load_private_key,
)
from snapshoe.kernel.errors import Problem
from snapshoe.kernel.settings import Settings


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    s = Settings(data_dir=tmp_path_factory.mktemp("keys"))
    ensure_dev_keys(s)
    return s


def test_attack_builder_covers_the_issue_list(settings: Settings) -> None:
    required = {
        "no_token", "alg_none", "hs256_public_key_as_secret", "expired", "nbf_in_future",
        "wrong_iss", "wrong_aud", "unknown_kid", "tampered_payload", "missing_exp",
    }  # fmt: skip
    names = [
        name for name, _ in token_attacks(load_private_key(settings.private_key_path), settings)
    ]
    assert required <= set(names)
    assert names == list(ATTACK_NAMES)


@pytest.mark.parametrize("attack", [a for a in ATTACK_NAMES if a != "no_token"])
def test_kernel_verifier_refuses_each_attack(settings: Settings, attack: str) -> None:
    key = load_private_key(settings.private_key_path)
    token = dict(token_attacks(key, settings))[attack]
    assert token is not None
    with pytest.raises(Problem) as exc:
        build_verifier(settings).verify(token)
    assert exc.value.status == 401
    assert exc.value.code == "unauthorized"


def test_kernel_verifier_accepts_the_controls(settings: Settings, tmp_path: Path) -> None:
    key = load_private_key(settings.private_key_path)
    verifier = build_verifier(settings)
    assert verifier.verify(valid_token(key, settings, sub="u-1")).user_id == "u-1"
    issued, _ = TokenIssuer(key, settings).issue_access("u-2", email_verified=False)
    assert verifier.verify(issued).user_id == "u-2"
