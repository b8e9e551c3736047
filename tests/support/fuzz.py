"""API fuzzing with schemathesis (issue 18, "Fuzzing the API"): the identities, the HTTP
session, the checks and the schema loading shared by ``tests/e2e/test_fuzz.py``.

Every operation runs as one of two identities, each a token minted per request with the
platform's real signing key (so a long run never meets an expired token): a real, verified
buyer (signed up through the gateway, so ``/api/users/me`` and the cart have an account behind
them), or, for ``/api/admin`` routes, an admin. The fuzzer's requests leave from an address of
their own (``fresh_address``): the gateway's per-address rate limits, which a fuzzer trips,
then never touch the other tests' clients.

The checks: no server error (a 5xx other than a 503 with ``Retry-After``, the documented
answer of an overloaded or degraded service), every response valid against its own schema
(schemathesis' ``response_schema_conformance``), and every ``application/problem+json`` body
carries a ``code``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from requests.adapters import HTTPAdapter
from schemathesis.specs.openapi.checks import response_schema_conformance

from snapshoe.kernel.auth import TokenIssuer, build_issuer
from snapshoe.kernel.settings import Settings

SERVICES = ("users", "products", "orders", "payments")
"""The services whose own ``/openapi.json`` is fuzzed at their port (the sandbox PG and the
mail sink are dev stand-ins, not the product)."""

EXAMPLES_ENV = "SNAPSHOE_FUZZ_EXAMPLES"
COVERAGE_ENV = "SNAPSHOE_FUZZ_COVERAGE"


def budget() -> int:
    """Examples per operation: a short CI budget unless ``SNAPSHOE_FUZZ_EXAMPLES`` says more."""
    return int(os.environ.get(EXAMPLES_ENV, "5"))


def coverage_phase() -> bool:
    """schemathesis' coverage phase (every boundary and type-mutation case the schema
    defines, tens per operation): on for a long run (budget above 50) unless
    ``SNAPSHOE_FUZZ_COVERAGE=0``; off in the CI budget, whose time it would triple."""
    raw = os.environ.get(COVERAGE_ENV)
    if raw is not None:
        return raw not in ("0", "false", "no")
    return budget() > 50


def fuzz_config(base_url: str, seed: int = 18) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": seed,
            "base-url": base_url,
            "request-timeout": 15,
            "generation": {"max-examples": budget(), "database": "none"},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": coverage_phase()},
                "fuzzing": {"enabled": True},
            },
        }
    )


class SourceAddressAdapter(HTTPAdapter):
    """Connections from one local address (a 127.x.y.z of the fuzzer's own)."""

    def __init__(self, address: str, **kw: Any) -> None:
        self._address = address
        super().__init__(**kw)

    def init_poolmanager(self, *args: Any, **kw: Any) -> None:
        kw["source_address"] = (self._address, 0)
        super().init_poolmanager(*args, **kw)


def session_from(address: str) -> requests.Session:
    session = requests.Session()
    adapter = SourceAddressAdapter(address)
    session.mount("http://", adapter)
    return session


@dataclass
class Identities:
    """Tokens for the fuzzer's buyer and admin, minted fresh for every request."""

    settings: Settings
    buyer_id: str
    admin_id: str
    _issuer: TokenIssuer | None = None

    def _token(self, user_id: str, roles: tuple[str, ...]) -> str:
        if self._issuer is None:
            self._issuer = build_issuer(self.settings)
        token, _ = self._issuer.issue_access(user_id, email_verified=True, roles=roles)
        return token

    def headers_for(self, path: str) -> dict[str, str]:
        if path.startswith("/api/admin"):
            return {"Authorization": f"Bearer {self._token(self.admin_id, ('admin',))}"}
        return {"Authorization": f"Bearer {self._token(self.buyer_id, ())}"}


@dataclass
class Tally:
    """What a run did: cases per operation and answers per status, for the report."""

    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    started: float = 0.0
    last: float = 0.0
    notes: list[str] = field(default_factory=list)

    def record(self, label: str, status: int) -> None:
        self.last = time.monotonic()
        self.started = self.started or self.last
        self.cases[label] += 1
        self.statuses[status] += 1

    def summary(self, name: str) -> str:
        took = self.last - self.started
        codes = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return (
            f"fuzz {name}: {len(self.cases)} operations, {sum(self.cases.values())} cases "
            f"in {took:.0f} s (statuses {codes})" + "".join(f"; {n}" for n in self.notes)
        )


def no_server_error(
    ctx: Any, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> None:
    """A 5xx is a bug, except 503 with Retry-After (documented: try again later)."""
    status = response.status_code
    if status >= 500 and not (status == 503 and "retry-after" in response.headers):
        raise AssertionError(
            f"server error {status} (a 5xx other than 503 with Retry-After): "
            f"{response.content[:500]!r}"
        )


def problem_has_code(
    ctx: Any, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> None:
    """Every problem+json body names its ``code`` (clients switch on it)."""
    content_type = (response.headers.get("content-type") or [""])[0]
    if not content_type.startswith("application/problem+json"):
        return
    try:
        body = response.json()
    except ValueError as exc:
        raise AssertionError(f"problem+json that is not JSON: {response.content[:300]!r}") from exc
    code = body.get("code") if isinstance(body, dict) else None
    if not isinstance(code, str) or not code:
        raise AssertionError(f"problem+json without a code: {body!r}")


CHECKS = [no_server_error, response_schema_conformance, problem_has_code]
