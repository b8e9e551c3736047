"""The merged public API, built in process from the four services' apps (no platform): what
each service's corrected schema declares, how the merge resolves clashes, and that every
``.http`` example of docs/http names a path (and method) the merged spec documents."""

from __future__ import annotations

import importlib
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from tests.support.platform import make_test_settings

from snapshoe.kernel.openapi import PROBLEM_REF
from snapshoe.web.api_reference import operations
from snapshoe.web.openapi_merge import PUBLIC_SERVICES, merge_specs

HTTP_DIR = Path(__file__).parents[3] / "docs" / "http"
REQUEST_LINE = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) \{\{gateway\}\}(\S+)")
# Not the public API's: the PG's card form, called by the buyer's browser (docs/sandbox-pg.md).
OUTSIDE_THE_SPEC = ("/pg/",)


@cache
def _specs() -> dict[str, dict[str, Any]]:
    settings = make_test_settings()
    return {
        name: importlib.import_module(f"snapshoe.{name}.bootstrap").create_app(settings).openapi()
        for name in PUBLIC_SERVICES
    }


@cache
def _merged() -> dict[str, Any]:
    return merge_specs(_specs())


@pytest.mark.parametrize("service", PUBLIC_SERVICES)
def test_a_service_schema_is_public_and_errors_are_problems(service: str) -> None:
    spec = _specs()[service]
    assert not [p for p in spec["paths"] if p.startswith("/internal")]
    schemas = spec["components"]["schemas"]
    assert not {"HTTPValidationError", "ValidationError"} & set(schemas)
    assert "Internal" not in " ".join(schemas)  # the internal routes' models went with them
    for item in spec["paths"].values():
        for op in item.values():
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    assert response["content"] == {
                        "application/problem+json": {"schema": {"$ref": PROBLEM_REF}}
                    }


def test_protected_routes_declare_the_bearer_scheme() -> None:
    paths = _merged()["paths"]
    assert paths["/api/orders"]["post"]["security"] == [{"bearerAuth": []}]
    assert paths["/api/admin/products"]["post"]["security"] == [{"bearerAuth": []}]
    assert paths["/api/users/me"]["get"]["security"] == [{"bearerAuth": []}]
    assert "security" not in paths["/api/products"]["get"]
    assert "security" not in paths["/api/auth/login"]["post"]
    assert "`unauthorized`" in paths["/api/cart"]["get"]["responses"]["401"]["description"]


def test_the_idempotency_and_admission_headers_are_declared() -> None:
    paths = _merged()["paths"]
    create = {p["name"]: p for p in paths["/api/orders"]["post"]["parameters"]}
    assert create["Idempotency-Key"]["required"] is True
    assert create["Idempotency-Key"]["in"] == "header"
    assert create["Admission-Token"]["required"] is False
    confirm = {p["name"]: p for p in paths["/api/payments/confirm"]["post"]["parameters"]}
    assert confirm["Idempotency-Key"]["required"] is True
    described = paths["/api/orders"]["post"]["responses"]["400"]["description"]
    assert "`idempotency_key_missing`" in described


def test_clashing_schemas_are_prefixed_with_the_service() -> None:
    def spec(line: dict[str, Any]) -> dict[str, Any]:
        ref = {"$ref": "#/components/schemas/Line"}
        body = {"content": {"application/json": {"schema": ref}}}
        problem = {"type": "object"}
        return {
            "paths": {},
            "components": {"schemas": {"Line": line, "Problem": problem}},
        } | {"paths": {"/x": {"post": {"requestBody": body, "responses": {}}}}}

    a = spec({"type": "object", "properties": {"a": {"type": "string"}}})
    b = spec({"type": "object", "properties": {"b": {"type": "string"}}})
    b["paths"] = {"/y": b["paths"]["/x"]}
    merged = merge_specs({"orders": a, "products": b})
    schemas = merged["components"]["schemas"]
    assert set(schemas) == {"OrdersLine", "ProductsLine", "Problem"}
    assert schemas["OrdersLine"]["title"] == "OrdersLine"
    x = merged["paths"]["/x"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    y = merged["paths"]["/y"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert x == {"$ref": "#/components/schemas/OrdersLine"}
    assert y == {"$ref": "#/components/schemas/ProductsLine"}
    assert a["components"]["schemas"]["Line"]  # the inputs are left as they were


def test_every_schema_reference_resolves() -> None:
    merged = _merged()
    text = repr(merged)
    names = set(re.findall(r"#/components/schemas/([A-Za-z0-9_]+)", text))
    assert names <= set(merged["components"]["schemas"])


def test_the_reference_page_lists_every_operation() -> None:
    ops = operations(_merged())
    assert len(ops) == sum(len(item) for item in _merged()["paths"].values())
    assert {"POST /api/orders", "POST /api/payments/confirm"} <= {
        f"{o['method']} {o['path']}" for o in ops
    }


def _templated(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(path)) + "$")


def test_every_http_example_names_a_documented_operation() -> None:
    documented = [
        (method.upper(), _templated(path))
        for path, item in _merged()["paths"].items()
        for method in item
    ]
    files = sorted(HTTP_DIR.glob("*.http"))
    assert len(files) >= 8
    seen = 0
    for file in files:
        for n, line in enumerate(file.read_text().splitlines(), 1):
            if not re.match(r"^(GET|POST|PUT|PATCH|DELETE) ", line):
                continue
            m = REQUEST_LINE.match(line)
            assert m, f"{file.name}:{n}: a request line starts with {{{{gateway}}}}: {line}"
            method, target = m.groups()
            path = re.sub(r"\{\{[a-z_]+\}\}", "x", target.split("?", 1)[0])
            seen += 1
            if path.startswith(OUTSIDE_THE_SPEC) or path in ("/api/openapi.json", "/api/docs"):
                continue
            assert any(method == m_ and p.match(path) for m_, p in documented), (
                f"{file.name}:{n}: {method} {path} is not in the merged spec"
            )
    assert seen >= 40
