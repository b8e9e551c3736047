"""OpenAPI links (``kernel.openapi._link_created``): a 201 that creates a resource links to
the operations that take its id, so stateful clients and the fuzzer (tests/e2e/test_fuzz.py)
can follow ``POST /api/orders`` to ``GET /api/orders/{order_id}``."""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

import pytest
from tests.support.platform import make_test_settings

from snapshoe.kernel.openapi import public_schema
from snapshoe.web.openapi_merge import PUBLIC_SERVICES, merge_specs


@cache
def _specs() -> dict[str, dict[str, Any]]:
    settings = make_test_settings()
    return {
        name: importlib.import_module(f"snapshoe.{name}.bootstrap").create_app(settings).openapi()
        for name in PUBLIC_SERVICES
    }


def _links(spec: dict[str, Any], path: str) -> dict[str, Any]:
    links: dict[str, Any] = spec["paths"][path]["post"]["responses"]["201"].get("links", {})
    return links


def _operation_ids(spec: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        op["operationId"]: (method, path)
        for path, item in spec["paths"].items()
        for method, op in item.items()
    }


def test_a_created_order_links_to_its_reads_cancel_and_refund() -> None:
    spec = _specs()["orders"]
    ids = _operation_ids(spec)
    targets = {ids[name] for name in _links(spec, "/api/orders")}
    assert targets == {
        ("get", "/api/orders/{order_id}"),
        ("post", "/api/orders/{order_id}/cancel"),
        ("get", "/api/admin/orders/{order_id}"),
        ("post", "/api/admin/orders/{order_id}/refund"),
    }
    for link in _links(spec, "/api/orders").values():
        assert link["parameters"] == {"order_id": "$response.body#/id"}


def test_a_created_product_and_item_link_to_what_takes_their_ids() -> None:
    spec = _specs()["products"]
    ids = _operation_ids(spec)
    product = {ids[name] for name in _links(spec, "/api/admin/products")}
    assert ("get", "/api/products/{product_id}") in product
    assert ("post", "/api/admin/products/{product_id}/items") in product
    assert ("patch", "/api/admin/products/{product_id}") in product
    item = {ids[name] for name in _links(spec, "/api/admin/products/{product_id}/items")}
    assert item == {("patch", "/api/admin/items/{item_id}")}


@pytest.mark.parametrize("service", PUBLIC_SERVICES)
def test_every_link_names_an_operation_and_one_of_its_path_parameters(service: str) -> None:
    spec = _specs()[service]
    ids = _operation_ids(spec)
    for item in spec["paths"].values():
        for op in item.values():
            for response in op["responses"].values():
                for link in response.get("links", {}).values():
                    _method, path = ids[link["operationId"]]
                    for name, expression in link["parameters"].items():
                        assert "{" + name + "}" in path
                        assert expression == "$response.body#/id"


def test_the_merge_keeps_the_links() -> None:
    merged = merge_specs(_specs())
    assert _links(merged, "/api/orders") == _links(_specs()["orders"], "/api/orders")
    assert _links(merged, "/api/admin/products")


def test_no_link_without_an_id_in_the_created_answer() -> None:
    spec: dict[str, Any] = {
        "paths": {
            "/api/things": {
                "post": {
                    "operationId": "make",
                    "responses": {
                        "201": {"content": {"application/json": {"schema": {"type": "object"}}}}
                    },
                }
            },
            "/api/things/{thing_id}": {"get": {"operationId": "read", "responses": {}}},
        }
    }
    public_schema(spec, [])
    assert "links" not in spec["paths"]["/api/things"]["post"]["responses"]["201"]
    spec["paths"]["/api/things"]["post"]["responses"]["201"]["content"]["application/json"][
        "schema"
    ] = {"type": "object", "properties": {"id": {"type": "string"}}}
    public_schema(spec, [])
    assert _links(spec, "/api/things") == {
        "read": {"operationId": "read", "parameters": {"thing_id": "$response.body#/id"}}
    }
