"""The event envelope every integration event extends, and the registry of announcements
(events that need not reach a queue). Imports nothing of its own package, so the event modules
(``orders``, ``payments``) can import it without a cycle."""

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


def is_announcement(routing_key: str) -> bool:
    """Whether ``routing_key`` is a registered announcement (see ``routing.must_route``)."""
    return routing_key in _ANNOUNCEMENTS
