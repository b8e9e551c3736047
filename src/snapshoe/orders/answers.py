"""What the orders handlers answer besides their models: the create-order :class:`Answer`
(status, body, replayed) and the service's 503s (both send ``Retry-After``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from snapshoe.kernel.errors import Problem, service_unavailable


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool = False


def unavailable(what: str) -> Problem:
    return service_unavailable(f"{what} is unavailable; retry shortly")


def outcome_unknown() -> Problem:
    return service_unavailable(
        "The order may or may not have been placed; retry with the same Idempotency-Key",
        code="outcome_unknown",
    )
