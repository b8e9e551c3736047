"""Settings of the sandbox PG only (env prefix ``SNAPSHOE_SANDBOX_PG_``).

Kept apart from the kernel ``Settings`` so the kernel needs no change: the port, the namespace,
Redis and the secret key still come from there (``SNAPSHOE_SANDBOX_PG_PORT``,
``SNAPSHOE_PG_SECRET_KEY``, ...). The knobs here are the *startup defaults*; tests and the
benchmark change them at run time with ``PUT /v1/sandbox/config``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LostResponseMode = Literal["drop", "hang"]


class Knobs(BaseModel):
    """Behaviour that tests and benchmarks turn at run time."""

    latency_ms: int = Field(default=0, ge=0, le=60_000)
    latency_jitter_ms: int = Field(default=0, ge=0, le=60_000)
    # Applied at confirm to cards that would otherwise be approved.
    decline_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # Applied at confirm to approvals: the approval is recorded, the response is lost.
    lost_response_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # drop: send the status line, then cut the connection (the client sees a transport error
    # at once). hang: hold the response for hang_seconds, then cut it (a read timeout).
    lost_response_mode: LostResponseMode = "drop"
    hang_seconds: float = Field(default=60.0, ge=0.0, le=600.0)
    # Applied before any processing of confirm/cancel: 500 FAILED_INTERNAL_SYSTEM_PROCESSING,
    # nothing done (for testing callers' handling of 5xx).
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)

    model_config = {"extra": "forbid"}


class SandboxSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SNAPSHOE_SANDBOX_PG_", extra="ignore")

    # redis: payments survive a sandbox restart (the reconciler may still ask about them);
    # memory: no Redis needed (unit tests), state dies with the process.
    store: Literal["redis", "memory"] = "redis"
    # How long payments, idempotency records and charge counts are kept (Toss keeps
    # idempotency keys 15 days; a sandbox needs far less).
    retention_seconds: int = Field(default=3 * 24 * 3600, ge=60)
    # An authorized payment not confirmed within this time expires (Toss: the payment session).
    session_ttl_seconds: int = Field(default=1800, ge=1)
    webhook_url: str = ""
    webhook_timeout_seconds: float = 3.0

    latency_ms: int = Field(default=0, ge=0, le=60_000)
    latency_jitter_ms: int = Field(default=0, ge=0, le=60_000)
    decline_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    lost_response_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    lost_response_mode: LostResponseMode = "drop"
    hang_seconds: float = Field(default=60.0, ge=0.0, le=600.0)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)

    def default_knobs(self) -> Knobs:
        return Knobs(
            latency_ms=self.latency_ms,
            latency_jitter_ms=self.latency_jitter_ms,
            decline_rate=self.decline_rate,
            lost_response_rate=self.lost_response_rate,
            lost_response_mode=self.lost_response_mode,
            hang_seconds=self.hang_seconds,
            error_rate=self.error_rate,
        )
