"""No naive datetime crosses the payments service's boundary (issue 13, item 6): the rows the
repository reads are aware UTC (``kernel.db.UtcDateTime``), the API's timestamps end in ``Z``
and so do the events' (a naive datetime would be published without an offset)."""

from __future__ import annotations

from datetime import UTC

from tests.integration.payments.conftest import EventTap, Payments
from tests.support.platform import User

from snapshoe.kernel.clock import utcnow
from snapshoe.payments import repository as repo


async def test_a_payment_is_aware_utc_in_the_repository_the_api_and_the_event(
    payments: Payments, buyer: User, events: EventTap
) -> None:
    order = payments.orders.add(buyer.id, 64_321)
    key = await payments.authorize(order["id"], 64_321, "4111111111110000")
    r = await payments.confirm(buyer, order["id"], key, 64_321)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["approved_at"].endswith("Z")
    assert body["created_at"].endswith("Z")

    async with payments.deps.sessions() as session:
        p = await repo.get(session, body["id"])
    assert p is not None
    for value in (p.created_at, p.updated_at, p.approved_at):
        assert value is not None
        assert value.tzinfo is UTC
        assert value <= utcnow()  # a naive value would raise TypeError

    (event,) = await events.wait("payment.approved", order["id"])
    assert event["approved_at"].endswith("Z")
    assert event["occurred_at"].endswith("Z")
