"""The products service's own refusals that more than one job raises."""

from __future__ import annotations

from snapshoe.kernel.errors import Problem, service_unavailable


def outcome_unknown() -> Problem:
    return service_unavailable(
        "The reservation may or may not have been written; retry with the same id",
        code="outcome_unknown",
    )


def limit_exceeded(product_id: str | None) -> Problem:
    return Problem(
        409,
        "purchase_limit_exceeded",
        detail="The per-buyer limit of this drop is reached",
        product_id=product_id,
    )


def gate_unavailable() -> Problem:
    return service_unavailable(
        "Stock is being recounted; retry shortly", code="stock_gate_unavailable"
    )
