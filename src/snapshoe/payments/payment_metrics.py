"""What payments counts: payments by result (when the state change is written) and the PG's
answers and latency (every HTTP call to the PG adapter, retries included)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PAYMENTS = Counter(
    "snapshoe_payments_total",
    "Payments moved to a result: approved (DONE), failed (ABORTED) or unknown (UNKNOWN, to be"
    " reconciled with the PG)",
    ["result"],
)
PG_REQUESTS = Counter(
    "snapshoe_pg_requests_total",
    "Calls to the payment gateway by method and outcome: ok, declined, not_found, unknown"
    " (timeout, cut, 5xx: the result must be read back), auth_error, error",
    ["method", "outcome"],
)
PG_SECONDS = Histogram(
    "snapshoe_pg_request_seconds",
    "Latency of one call to the payment gateway (its own retries included)",
    ["method"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10),
)
