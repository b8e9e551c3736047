"""The users service's internal account answers (``GET /internal/users/{id}/account``,
``GET /internal/users?email=``), used by the users service (``response_model``) and by
``kernel.clients.users`` (parsed into them).

Imports nothing of its own package (see ``kernel/contracts/__init__.py``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class AccountFacts(BaseModel):
    """What another service may ask of an account: the waiting room's minimum account age."""

    user_id: str
    created_at: datetime
    email_verified: bool


class UserRef(BaseModel):
    """The account an address belongs to (``GET /internal/users?email=``): orders' admin list
    filters by a buyer's email, but orders stores only the buyer's id."""

    user_id: str
