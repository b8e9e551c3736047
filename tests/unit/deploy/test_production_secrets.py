"""Outside dev and test, start-up refuses missing or public default secrets (issue 12, item 7).

The rules are pure logic (``secret_problems``); the refusal is checked on the real commands
that start processes (``snapshoe serve``, ``snapshoe worker``, ``snapshoe up``), which must
exit non-zero before they bind, connect or generate anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from snapshoe.kernel.settings import (
    PUBLIC_DEV_SECRETS,
    Settings,
    UnsafeSecretsError,
    check_start_secrets,
    secret_problems,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _no_snapshoe_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SNAPSHOE_"):
            monkeypatch.delenv(key)


def _safe(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "production",
        "internal_token": "a-long-random-token-0123456789",
        "pg_secret_key": "live_sk_operator_supplied",
        "db_password": "operator-db-pass",
        "amqp_url": "amqp://snapshoe:operator-mq-pass@mq:5672/",
        "jwt_private_key_file": Path("/run/secrets/jwt-private.pem"),
        "jwt_public_key_file": Path("/run/secrets/jwt-public.pem"),
    }
    return Settings(**{**values, **overrides})


def test_the_environment_setting_defaults_to_dev_and_reads_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().environment == "dev"
    monkeypatch.setenv("SNAPSHOE_ENVIRONMENT", "production")
    assert Settings().environment == "production"
    monkeypatch.setenv("SNAPSHOE_ENVIRONMENT", "staging")
    with pytest.raises(ValueError, match="environment"):
        Settings()


@pytest.mark.parametrize("env", ["dev", "test"])
def test_dev_and_test_accept_the_public_defaults(env: str) -> None:
    for role in ("users", "payments-worker", "up", "migrate"):
        assert secret_problems(Settings(environment=env), role) == []  # type: ignore[arg-type]


def test_production_with_every_secret_given_starts() -> None:
    for role in ("users", "products", "orders", "payments", "sandbox_pg", "mail_sink", "up"):
        check_start_secrets(_safe(), role)
        check_start_secrets(_safe(), f"{role}-worker")
    check_start_secrets(_safe(), "migrate")


@pytest.mark.parametrize(
    ("overrides", "role", "variable"),
    [
        ({"internal_token": "snapshoe-dev-internal-token"}, "orders", "SNAPSHOE_INTERNAL_TOKEN"),
        ({"internal_token": "snapshoe-dev-internal-token"}, "orders-worker", "INTERNAL_TOKEN"),
        ({"pg_secret_key": "test_sk_snapshoe_sandbox"}, "payments", "SNAPSHOE_PG_SECRET_KEY"),
        ({"pg_secret_key": ""}, "payments-worker", "SNAPSHOE_PG_SECRET_KEY"),
        ({"db_password": ""}, "products", "SNAPSHOE_DB_PASSWORD"),
        ({"db_password": "snapshoe-dev-db"}, "migrate", "SNAPSHOE_DB_PASSWORD"),
        ({"amqp_url": "amqp://guest:guest@127.0.0.1:5672/"}, "users", "SNAPSHOE_AMQP_URL"),
        ({"amqp_url": "amqp://snapshoe:snapshoe-dev-mq@mq/"}, "up", "SNAPSHOE_AMQP_URL"),
        ({"jwt_public_key_file": None}, "orders", "SNAPSHOE_JWT_PUBLIC_KEY_FILE"),
        ({"jwt_private_key_file": None}, "users", "SNAPSHOE_JWT_PRIVATE_KEY_FILE"),
        ({"jwt_private_key_file": None}, "up", "SNAPSHOE_JWT_PRIVATE_KEY_FILE"),
    ],
)
def test_production_refuses_a_public_or_missing_secret(
    overrides: dict[str, object], role: str, variable: str
) -> None:
    with pytest.raises(UnsafeSecretsError) as caught:
        check_start_secrets(_safe(**overrides), role)
    message = str(caught.value)
    assert variable in message
    assert "set" in message or "give" in message
    assert len(caught.value.problems) == 1


def test_a_secret_a_process_never_uses_is_not_demanded() -> None:
    # Only users signs tokens; only payments (and the sandbox) hold the PG key.
    check_start_secrets(_safe(jwt_private_key_file=None), "orders")
    check_start_secrets(_safe(pg_secret_key="test_sk_snapshoe_sandbox"), "orders")


def test_the_public_values_list_holds_every_dev_default() -> None:
    defaults = Settings()
    assert defaults.internal_token in PUBLIC_DEV_SECRETS
    assert defaults.pg_secret_key in PUBLIC_DEV_SECRETS
    assert defaults.db_password in PUBLIC_DEV_SECRETS
    for value in ("snapshoe-dev-db", "snapshoe-dev-mq"):  # compose and the k8s dev overlay
        assert value in (ROOT / "compose.yml").read_text()
        assert value in PUBLIC_DEV_SECRETS


def _run(*args: str, env: dict[str, str]) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SNAPSHOE_")}
    # Unused ports and no reachable database, Redis or broker: were the command to start
    # anyway, it would touch nothing shared, and the test would see it run instead of refuse.
    base = {
        "SNAPSHOE_ENVIRONMENT": "production",
        "SNAPSHOE_NAMESPACE": "snapshoe_prodcheck",
        "SNAPSHOE_DB_PORT": "9",
        "SNAPSHOE_REDIS_URL": "redis://127.0.0.1:9/0",
        "SNAPSHOE_AMQP_URL": "amqp://guest:guest@127.0.0.1:9/",
        "SNAPSHOE_GATEWAY_PORT": "29400",
        "SNAPSHOE_USERS_PORT": "29401",
        "SNAPSHOE_PRODUCTS_PORT": "29402",
        "SNAPSHOE_ORDERS_PORT": "29403",
        "SNAPSHOE_PAYMENTS_PORT": "29404",
        "SNAPSHOE_SANDBOX_PG_PORT": "29405",
        "SNAPSHOE_MAIL_SINK_SMTP_PORT": "29406",
        "SNAPSHOE_MAIL_SINK_HTTP_PORT": "29407",
        "SNAPSHOE_GATEWAY_STATS_PORT": "29408",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "snapshoe.cli", *args],
        env={**clean, **base, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=45)
    except subprocess.TimeoutExpired as exc:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"`snapshoe {' '.join(args)}` started instead of refusing") from exc
    return proc.returncode, out


@pytest.mark.parametrize(
    ("args", "variable"),
    [
        (("serve", "orders"), "SNAPSHOE_INTERNAL_TOKEN"),
        (("serve", "users"), "SNAPSHOE_JWT_PRIVATE_KEY_FILE"),
        (("worker", "payments"), "SNAPSHOE_PG_SECRET_KEY"),
        (("up", "--no-seed"), "SNAPSHOE_INTERNAL_TOKEN"),
    ],
)
def test_start_up_commands_refuse_default_secrets_in_production(
    args: tuple[str, ...], variable: str, tmp_path: Path
) -> None:
    code, out = _run(*args, env={"SNAPSHOE_DATA_DIR": str(tmp_path / "data")})
    assert code == 2, out
    assert variable in out
    assert "SNAPSHOE_ENVIRONMENT=production" in out
    # Refused before doing anything: no dev keys generated, nothing listening.
    assert not (tmp_path / "data" / "keys").exists()


def test_doctor_names_the_secrets_production_would_refuse(tmp_path: Path) -> None:
    code, out = _run("doctor", env={"SNAPSHOE_DATA_DIR": str(tmp_path / "data")})
    assert code == 1, out
    line = next(ln for ln in out.splitlines() if "] secrets" in ln)
    assert line.startswith("  [FAIL] secrets")
    assert "SNAPSHOE_INTERNAL_TOKEN" in line
    assert "SNAPSHOE_PG_SECRET_KEY" in line
