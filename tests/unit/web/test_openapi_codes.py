"""The error codes the public OpenAPI names, checked against the contract: for every route of
docs/api.md (and of docs/api-additions.md's table of extra codes), each code the contract says
the route answers is named in the merged spec's description of that status, and each bare
status it names is a declared response. The rules of API.md's conventions (a token route is 401
`unauthorized`, an admin route 403 `forbidden`, a list 422 `invalid_cursor` ...) are checked on
every operation of the spec.

Built in process from the four services' apps, like test_openapi_merge.py (no platform)."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from tests.support.platform import make_test_settings

from snapshoe.web.openapi_merge import PUBLIC_SERVICES, merge_specs

DOCS = Path(__file__).parents[3] / "docs"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ROUTE = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE) (/api/[^\s?`]*)")
STATUS_CODE = re.compile(r"\b([45]\d\d) `([a-z0-9_]+)`")
BARE_STATUS = re.compile(r"\b([45]\d\d)\b")
NAMED = re.compile(r"`([a-z0-9_]+)`")

# What the contract says in prose rather than in a route's row (the sentence it comes from).
PROSE: dict[tuple[str, str], set[tuple[int, str]]] = {
    # api.md, "Sale modes": "A draw product cannot be bought through POST /api/orders: 409
    # not_on_sale"; "Waiting room": "missing, someone else's ... 403 admission_required".
    ("POST", "/api/orders"): {(409, "not_on_sale"), (403, "admission_required")},
    # api.md, "Sale modes": "Changing sale_mode or these times after buyers have queued or
    # entered: 409 invalid_state"; api-additions, "Waiting room" and "Draws": 422 for times that
    # do not fit.
    ("PATCH", "/api/admin/products/{}"): {(409, "invalid_state"), (422, "validation_error")},
    ("POST", "/api/admin/products"): {(422, "validation_error")},
    # api-additions, "Error codes beyond API.md": 422 validation_error, field body.password.
    ("POST", "/api/users"): {(422, "validation_error"), (429, "too_many_requests")},
    ("POST", "/api/auth/password-reset/confirm"): {(422, "validation_error")},
    # api-additions, "Waiting room": 503 too_many_streams.
    ("GET", "/api/products/{}/queue/me/events"): {(503, "too_many_streams")},
    # api-additions, "Draws": 503 when the card cannot be checked, 429 at the gateway.
    ("POST", "/api/products/{}/entries"): {
        (503, "service_unavailable"),
        (429, "too_many_requests"),
    },
    # api-additions, "Admin orders".
    ("GET", "/api/admin/orders/{}"): {(404, "not_found")},
    ("GET", "/api/admin/orders"): {(422, "validation_error"), (503, "service_unavailable")},
    ("POST", "/api/admin/orders/{}/refund"): {(404, "not_found")},
    # api-additions, "Operator figures": 503 while Redis cannot be read.
    ("GET", "/api/admin/products/{}/sales"): {(503, "service_unavailable")},
}
# API.md, "Conventions": the areas that need a verified email (cart, orders, payments; the
# waiting room and draw sections say so too).
VERIFIED = (
    "/api/cart",
    "/api/orders",
    "/api/payments/confirm",
    "/api/payments/{}",
    "/api/products/{}/queue",
    "/api/products/{}/entries",
)


def _norm(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path.rstrip("/"))


@cache
def _spec() -> dict[str, Any]:
    settings = make_test_settings()
    return merge_specs(
        {
            name: importlib.import_module(f"snapshoe.{name}.bootstrap")
            .create_app(settings)
            .openapi()
            for name in PUBLIC_SERVICES
        }
    )


def _operations() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), _norm(path)): op
        for path, item in _spec()["paths"].items()
        for method, op in item.items()
        if method.upper() in METHODS
    }


def _listed(op: dict[str, Any]) -> dict[int, set[str]]:
    """Status -> the codes its description names."""
    return {
        int(status): set(NAMED.findall(response.get("description", "")))
        for status, response in op["responses"].items()
        if status.isdigit() and int(status) >= 400
    }


def _table_rows(text: str) -> Iterator[tuple[list[str], list[str]]]:
    """(header cells, row cells) of every markdown table row of ``text``."""
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set("".join(cells)) <= set("-: "):
            yield header, cells


def _contract() -> dict[tuple[str, str], tuple[set[tuple[int, str]], set[int]]]:
    """Route -> (the (status, code) pairs, the bare statuses) the contract gives it."""
    out: dict[tuple[str, str], tuple[set[tuple[int, str]], set[int]]] = {}

    def add(route: tuple[str, str], pairs: set[tuple[int, str]], bare: set[int]) -> None:
        known = out.setdefault(route, (set(), set()))
        known[0].update(pairs)
        known[1].update(bare)

    # api.md: the tables with an "errors" column, the route in the first cell.
    for header, cells in _table_rows((DOCS / "api.md").read_text()):
        if "errors" not in header or len(cells) != len(header):
            continue
        found = ROUTE.search(cells[0])
        if not found:
            continue
        errors = cells[header.index("errors")]
        pairs = {(int(s), c) for s, c in STATUS_CODE.findall(errors)}
        add((found[1], _norm(found[2])), pairs, {int(s) for s in BARE_STATUS.findall(errors)})
    # api-additions.md: "status, code | where": the routes the "where" cell names in full.
    for header, cells in _table_rows((DOCS / "api-additions.md").read_text()):
        if header[:2] != ["status, code", "where"]:
            continue
        pairs = {(int(s), c) for s, c in STATUS_CODE.findall(cells[0])}
        for method, path in ROUTE.findall(cells[1]):
            add((method, _norm(path)), pairs, set())
    for route, pairs in PROSE.items():
        add(route, pairs, set())
    return out


def test_the_contract_parses() -> None:
    """The parser sees the contract's tables (a change of their shape must not make the
    cross-check below vacuous)."""
    contract = _contract()
    assert len(contract) >= 30
    assert (409, "sold_out") in contract[("POST", "/api/orders")][0]
    assert (409, "cart_full") in contract[("PUT", "/api/cart/lines/{}")][0]
    assert 422 in contract[("GET", "/api/products")][1]
    assert set(contract) <= set(_operations()), set(contract) - set(_operations())


@pytest.mark.parametrize(
    "route", sorted(_contract()), ids=lambda r: f"{r[0]} {r[1]}" if isinstance(r, tuple) else r
)
def test_every_code_the_contract_names_is_in_the_spec(route: tuple[str, str]) -> None:
    op = _operations()[route]
    listed = _listed(op)
    pairs, bare = _contract()[route]
    missing = sorted((s, c) for s, c in pairs if c not in listed.get(s, set()))
    assert not missing, f"{route}: the spec does not name {missing}; it lists {listed}"
    assert bare <= set(listed), f"{route}: no response for {sorted(bare - set(listed))}"


def test_the_conventions_hold_on_every_operation() -> None:
    for (method, path), op in _operations().items():
        listed = _listed(op)
        where = f"{method} {path}"
        if op.get("security"):
            assert "unauthorized" in listed.get(401, set()), where
        if path.startswith("/api/admin/"):
            assert "forbidden" in listed.get(403, set()), where
        if path.startswith(VERIFIED):
            assert "email_not_verified" in listed.get(403, set()), where
        params = {p["name"] for p in op.get("parameters", [])}
        if "cursor" in params:  # api-additions: 422 invalid_cursor on every list
            assert "invalid_cursor" in listed.get(422, set()), where
        if "requestBody" in op:
            assert "invalid_json" in listed.get(400, set()), where
            assert "payload_too_large" in listed.get(413, set()), where
        if op.get("parameters") or "requestBody" in op:
            assert "validation_error" in listed.get(422, set()), where
        if "Idempotency-Key" in params:
            assert {"idempotency_key_missing", "idempotency_key_invalid"} <= listed[400], where
            assert "idempotency_key_in_use" in listed.get(409, set()), where
            assert "idempotency_key_reused" in listed.get(422, set()), where


def test_no_error_response_is_left_without_a_code() -> None:
    """A declared error status names at least one code (a client switches on `code`)."""
    for (method, path), op in _operations().items():
        for status, codes in _listed(op).items():
            assert codes, f"{method} {path}: {status} names no code"


# The routes whose declarations named only the generic codes (or none): what each can answer,
# as their handlers raise it (users.cart, users.reset, products.admin, products.queue_tickets,
# products.draw_entries, orders.placing, orders.queries, payments.handlers).
FIXED: dict[tuple[str, str], dict[int, set[str]]] = {
    ("POST", "/api/users"): {
        422: {"validation_error"},
        429: {"too_many_requests"},
        503: {"service_unavailable"},
    },
    ("PUT", "/api/cart/lines/{}"): {
        404: {"not_found"},
        409: {"cart_full"},
        503: {"service_unavailable"},
    },
    ("GET", "/api/cart"): {503: {"service_unavailable"}},
    ("DELETE", "/api/cart"): {503: {"service_unavailable"}},
    ("DELETE", "/api/cart/lines/{}"): {503: {"service_unavailable"}},
    ("POST", "/api/auth/password-reset/confirm"): {
        400: {"reset_code_invalid", "reset_code_expired"},
        429: {"too_many_attempts"},
    },
    ("POST", "/api/admin/products"): {422: {"validation_error"}, 503: {"service_unavailable"}},
    ("PATCH", "/api/admin/products/{}"): {
        404: {"not_found"},
        409: {"invalid_state"},
        422: {"validation_error"},
    },
    ("POST", "/api/admin/products/{}/items"): {404: {"not_found"}, 422: {"validation_error"}},
    ("PATCH", "/api/admin/items/{}"): {404: {"not_found"}, 409: {"stock_below_committed"}},
    ("GET", "/api/admin/products/{}/draw"): {404: {"not_found"}},
    ("GET", "/api/admin/products/{}/queue"): {404: {"not_found"}, 409: {"not_queued"}},
    ("POST", "/api/products/{}/queue"): {403: {"account_too_new"}, 409: {"conflict"}},
    ("DELETE", "/api/products/{}/entries/me"): {409: {"entries_closed", "not_a_draw"}},
    ("GET", "/api/products"): {422: {"invalid_cursor"}},
    ("POST", "/api/orders"): {409: {"not_on_sale"}, 503: {"outcome_unknown"}},
    ("GET", "/api/orders"): {422: {"invalid_cursor"}},
    ("GET", "/api/admin/orders"): {422: {"invalid_cursor"}},
    ("POST", "/api/payments/webhooks/pg"): {400: {"invalid_webhook"}},
}


@pytest.mark.parametrize("route", sorted(FIXED), ids=lambda r: f"{r[0]} {r[1]}")
def test_the_routes_that_listed_only_generic_codes_name_their_own(route: tuple[str, str]) -> None:
    listed = _listed(_operations()[route])
    for status, codes in FIXED[route].items():
        assert codes <= listed.get(status, set()), (route, status, listed)
