"""Integration events exchanged between services, versioned.

An event type never changes meaning: a breaking change is a new ``version`` published beside the
old one until every consumer has moved. Consumers ignore fields they don't know.
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

    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def routing_key(cls) -> str:
        return f"{cls.TYPE}.v{cls.VERSION}"

    def to_message(self) -> dict[str, Any]:
        return {
            "event_type": self.TYPE,
            "version": self.VERSION,
            **self.model_dump(mode="json"),
        }
