"""The products service's own refusals that more than one job raises."""

from __future__ import annotations

from snapshoe.kernel.errors import Problem


def outcome_unknown() -> Problem:
    return Problem(
        503,
        "outcome_unknown",
        detail="The reservation may or may not have been written; retry with the same id",
        headers={"Retry-After": "1"},
    )


def limit_exceeded(product_id: str | None) -> Problem:
    return Problem(
        409,
        "purchase_limit_exceeded",
        detail="The per-buyer limit of this drop is reached",
        product_id=product_id,
    )


def gate_unavailable() -> Problem:
    return Problem(
        503,
        "stock_gate_unavailable",
        detail="Stock is being recounted; retry shortly",
        headers={"Retry-After": "1"},
    )
