"""The users service's dependency record, built by :mod:`snapshoe.users.bootstrap`."""

from __future__ import annotations

from dataclasses import dataclass

from pwdlib import PasswordHash
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from snapshoe.kernel.auth import TokenIssuer, TokenVerifier
from snapshoe.kernel.clients.products import ProductsClient
from snapshoe.kernel.db import Sessions
from snapshoe.users.mail import Mailer, MailQueue
from snapshoe.users.settings import UsersSettings


@dataclass(slots=True)
class Deps:
    settings: UsersSettings
    engine: AsyncEngine
    sessions: Sessions
    redis: Redis
    issuer: TokenIssuer
    verifier: TokenVerifier
    hasher: PasswordHash
    # A real argon2id hash of a random password: verified against when the email is unknown,
    # so a login for an unknown address costs what a wrong password costs.
    dummy_hash: str
    mailer: Mailer
    # Where signup and resend leave their mail for the users worker (users.mail).
    mail_queue: MailQueue
    # Item details for the cart view and the existence check of a new line.
    products: ProductsClient
