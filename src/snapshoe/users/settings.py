"""The users service's own settings (same ``SNAPSHOE_`` names as ever): codes, mails and the
service's own limits. The shared ones (databases, ports, keys) are the kernel's ``Settings``."""

from __future__ import annotations

from pydantic import Field

from snapshoe.kernel.settings import Settings


class UsersSettings(Settings):
    """The kernel's shared settings and the users service's own knobs."""

    # Email verification
    verification_code_ttl_seconds: int = 600
    verification_max_attempts: int = 5
    verification_resend_interval_seconds: int = 60
    # The users service's own limits (docs/security.md), kept in Redis with TTLs, so they hold
    # whatever the gateway lets through. Wrong passwords per account and client address, and
    # per account from anywhere (unknown addresses alike), within a fixed window.
    login_failures_per_address: int = Field(default=5, ge=1)
    login_failures_per_account: int = Field(default=20, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)
    # Verification code tries per client address per day (any addresses tried).
    verification_tries_per_address_per_day: int = Field(default=100, ge=1)
    # Sign-up and resend mails per target address per hour (beside the one-a-minute interval).
    mails_per_address_per_hour: int = Field(default=5, ge=1)
    # Account mail queue (users worker): how long an unsent mail waits before it is retried.
    mail_retry_seconds: float = Field(default=5.0, gt=0)

    # Password reset (POST /api/auth/password-reset): a mailed 6-digit code, 5 wrong tries
    # (verification_max_attempts) kill it; one request a minute per address, a few a day.
    password_reset_code_ttl_seconds: int = Field(default=900, ge=60, le=86400)
    password_reset_interval_seconds: int = Field(default=60, ge=1)
    password_reset_daily_limit: int = Field(default=5, ge=1, le=100)
    # Accounts left unverified this long are deleted by the users worker, so the address can
    # be registered anew (a pre-registered squatter does not keep it).
    unverified_account_ttl_hours: float = Field(default=72, gt=0)
