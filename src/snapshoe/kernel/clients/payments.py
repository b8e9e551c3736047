"""Client of the payments service's internal API (the products service's draw worker checks an
entrant's billing key and charges a winner's order through it). Requests and answers are the
contract models of ``kernel.contracts.internal_payments``."""

from __future__ import annotations

from typing import Any

import aiohttp

from snapshoe.kernel.clients import InternalClient, parse
from snapshoe.kernel.contracts.internal_operations import ServiceOperations
from snapshoe.kernel.contracts.internal_payments import (
    MAX_ORDER_NAME,
    BillingKeyOut,
    ChargeOut,
)
from snapshoe.kernel.settings import Settings

# A charge reads the order from orders, then waits for the PG (up to the PG timeout, 5 s by
# default): give it more than both before calling payments unavailable.
CHARGE_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=1.0, sock_read=20.0)


class PaymentsClient(InternalClient):
    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, "payments", **kwargs)

    async def verify_billing_key(self, billing_key: str, customer_key: str) -> BillingKeyOut:
        """The card behind ``billing_key`` if the PG issued it to ``customer_key`` (masked number,
        fingerprint). Raises UpstreamProblem 422 ``billing_key_invalid`` when the PG does not
        know it or it is another customer's; UpstreamUnavailable when payments or the PG cannot
        answer (payments says 503). Read-only, so retried like a GET."""
        # Sent as given: payments validates it (a bad one is its 422, an UpstreamProblem).
        body = {"billing_key": billing_key, "customer_key": customer_key}
        path = "/internal/billing-keys/verify"
        answer = await self.request("POST", path, json=body, retry=True)
        return parse(BillingKeyOut, answer, path)

    async def charge(
        self, order_id: str, billing_key: str, customer_key: str, order_name: str
    ) -> ChargeOut:
        """Charge the order's total (orders' amount, never the caller's) through the billing key.
        Idempotent by ``order_id`` (one charge per order, ever; a later call answers the same
        payment), so it is retried like a GET. ``status``: DONE, FAILED (declined; ``pg_code``
        says why), UNKNOWN (the PG's answer was lost: payments resolves it, then the order's
        status tells), IN_PROGRESS (another call is charging it), CANCELED (refunded since).
        Raises UpstreamProblem 404 ``not_found`` (no such order of this customer), 409
        ``invalid_state`` (not payable, or already paid otherwise), 422 ``validation_error``;
        UpstreamUnavailable when payments, orders or the PG's credentials fail."""
        body = {
            "order_id": order_id,
            "billing_key": billing_key,
            "customer_key": customer_key,
            # The PG takes at most 100 characters (a product's name may be longer).
            "order_name": order_name[:MAX_ORDER_NAME],
        }
        path = "/internal/charges"
        answer = await self.request("POST", path, json=body, retry=True, timeout=CHARGE_TIMEOUT)
        return parse(ChargeOut, answer, path)

    async def operations(self) -> ServiceOperations:
        """Its outbox backlog (and, of products, the gate's drift): the operator's figures."""
        body = await self.request("GET", "/internal/operations", retry=False)
        return parse(ServiceOperations, body, "GET /internal/operations")
