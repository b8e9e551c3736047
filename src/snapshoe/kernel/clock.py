"""Time, in one place: an injectable clock (code that schedules by wall time takes a
:class:`Clock`, so a test can jump hours ahead without sleeping) and the helpers every service
uses. Times in the code are timezone-aware UTC; naive values exist only at the database
boundary (``DATETIME(6)`` holds UTC without an offset), converted by
:class:`snapshoe.kernel.db.UtcDateTime`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = _utc(start) if start is not None else datetime.now(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, at: datetime) -> None:
        self._now = _utc(at)

    def advance(self, by: float | timedelta) -> datetime:
        self._now += by if isinstance(by, timedelta) else timedelta(seconds=by)
        return self._now


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A naive datetime is UTC (what the database holds); an aware one is converted."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def to_db(value: datetime) -> datetime:
    """The naive UTC a ``DATETIME(6)`` column stores (for raw SQL; tables use UtcDateTime)."""
    return as_utc(value).replace(tzinfo=None)


def rfc3339(value: datetime) -> str:
    """``2026-12-02T18:00:00.123456Z``: the API's timestamp format."""
    return as_utc(value).isoformat().replace("+00:00", "Z")


def epoch_ms(value: datetime) -> int:
    return int(as_utc(value).timestamp() * 1000)


_utc = as_utc
