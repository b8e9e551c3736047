"""What the templates format: money in won, times in Korea's time zone (the shop's, KST, UTC+9,
no daylight saving) with the ISO value beside it for the page's scripts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import jinja2

KST = timezone(timedelta(hours=9), "KST")


def parse_time(value: str | datetime | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def kst(value: str | datetime | None) -> str:
    """``2026-12-07 18:00 KST``."""
    at = parse_time(value)
    return at.astimezone(KST).strftime("%Y-%m-%d %H:%M KST") if at else ""


def kst_local(value: str | datetime | None) -> str:
    """The value of a datetime-local field, in the shop's time."""
    at = parse_time(value)
    return at.astimezone(KST).strftime("%Y-%m-%dT%H:%M") if at else ""


def iso(value: str | datetime | None) -> str:
    at = parse_time(value)
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z") if at else ""


def won(value: int | None) -> str:
    return f"{int(value or 0):,}"


def install_filters(env: jinja2.Environment) -> None:
    env.filters["kst"] = kst
    env.filters["iso"] = iso
    env.filters["kst_local"] = kst_local
    env.filters["won"] = won
