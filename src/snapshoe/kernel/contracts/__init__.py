"""Integration events exchanged between services, versioned.

An event type never changes meaning: a breaking change is a new ``version`` published beside the
old one until every consumer has moved. Consumers ignore fields they don't know.

``MUST_ROUTE``: an event some service acts on (a payment, a cancellation, a refund) must reach a
queue; the relay publishes it ``mandatory`` and keeps it unpublished when the broker has no
queue for it. An announcement nobody needs today (``order.shipped``...) sets it False: with no
queue bound it is dropped by the broker, as designed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class Event(BaseModel):
    """The envelope: what every event carries besides its payload."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    MUST_ROUTE: ClassVar[bool] = True

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _register(cls)

    @classmethod
    def routing_key(cls) -> str:
        return f"{cls.TYPE}.v{cls.VERSION}"

    def to_message(self) -> dict[str, Any]:
        return {
            "event_type": self.TYPE,
            "version": self.VERSION,
            **self.model_dump(mode="json"),
        }


_ANNOUNCEMENTS: set[str] = set()


def _register(cls: type[Event]) -> None:
    if cls.TYPE and not cls.MUST_ROUTE:
        _ANNOUNCEMENTS.add(cls.routing_key())


def must_route(routing_key: str) -> bool:
    """Whether an event of ``routing_key`` must reach a queue. Unknown keys must (the safe
    side: an event kept is visible, a dropped one is not)."""
    from snapshoe.kernel.contracts import orders, payments  # noqa: F401 (registers the types)

    return routing_key not in _ANNOUNCEMENTS
