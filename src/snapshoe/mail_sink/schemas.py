"""The mail sink's HTTP API models (docs/api.md, Operations)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class MessageOut(BaseModel):
    id: str
    to: str
    sender: str = Field(serialization_alias="from")
    subject: str
    body: str
    html: str | None
    message_id: str | None
    received_at: str


class Cleared(BaseModel):
    deleted: int
