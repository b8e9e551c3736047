"""What the orders handlers answer besides their models: the create-order :class:`Answer`
(status, body, replayed) and the service's 503s (both send ``Retry-After``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from snapshoe.kernel.errors import Problem


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool = False


def unavailable(what: str) -> Problem:
    return Problem(
        503,
        "service_unavailable",
        detail=f"{what} is unavailable; retry shortly",
        headers={"Retry-After": "1"},
    )


def outcome_unknown() -> Problem:
    return Problem(
        503,
        "outcome_unknown",
        detail="The order may or may not have been placed; retry with the same Idempotency-Key",
        headers={"Retry-After": "1"},
    )
