"""The users service's internal account answer (``GET /internal/users/{id}/account``), used by
the users service (``response_model``) and by ``kernel.clients.users`` (parsed into it).

Imports nothing of its own package (see ``kernel/contracts/__init__.py``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class AccountFacts(BaseModel):
    """What another service may ask of an account: the waiting room's minimum account age."""

    user_id: str
    created_at: datetime
    email_verified: bool
