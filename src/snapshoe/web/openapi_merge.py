"""The merged public API (``GET /api/openapi.json``): the four services' public specs in one.

Paths and components are unioned; a component schema two services define differently is
renamed ``<Service><Name>`` in each service that has it (and every ``$ref`` to it rewritten),
one they define identically (``Problem``) is kept once. docs/openapi.md.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

PUBLIC_SERVICES = ("users", "products", "orders", "payments")
PREFIX = "#/components/schemas/"


def merge_specs(specs: Mapping[str, dict[str, Any]], *, version: str = "1.0.0") -> dict[str, Any]:
    """One OpenAPI 3.1 document from ``{service: spec}`` (the services' public specs)."""
    specs = {name: copy.deepcopy(spec) for name, spec in specs.items()}
    clashes = _clashing_schemas(specs)
    merged: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "SnapShoe API",
            "version": version,
            "description": "The public API behind the gateway (docs/api.md); errors are "
            "application/problem+json with a stable `code`.",
        },
        "servers": [{"url": "/"}],
        "paths": {},
        "components": {"schemas": {}, "securitySchemes": {}},
        "tags": [],
    }
    seen_tags: set[str] = set()
    for service, spec in specs.items():
        renames = {n: _prefixed(service, n) for n in clashes if n in _schemas(spec)}
        if renames:
            spec = _rewrite_refs(spec, renames)
        for path, item in spec.get("paths", {}).items():
            merged["paths"].setdefault(path, {}).update(item)
        for name, schema in _schemas(spec).items():
            if name in renames:
                schema = {**schema, "title": renames[name]}
            merged["components"]["schemas"][renames.get(name, name)] = schema
        components = spec.get("components", {})
        merged["components"]["securitySchemes"].update(components.get("securitySchemes", {}))
        for tag in spec.get("tags", []):
            if tag.get("name") not in seen_tags:
                seen_tags.add(tag.get("name"))
                merged["tags"].append(tag)
    if not merged["tags"]:
        del merged["tags"]
    return merged


def _schemas(spec: Mapping[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = spec.get("components", {}).get("schemas", {})
    return schemas


def _clashing_schemas(specs: Mapping[str, dict[str, Any]]) -> set[str]:
    """Names that at least two services define differently."""
    first: dict[str, Any] = {}
    clashes: set[str] = set()
    for spec in specs.values():
        for name, schema in _schemas(spec).items():
            if name in first and first[name] != schema:
                clashes.add(name)
            first.setdefault(name, schema)
    return clashes


def _prefixed(service: str, name: str) -> str:
    return "".join(part.capitalize() for part in service.split("_")) + name


def _rewrite_refs(node: Any, renames: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(PREFIX):
                name = value.removeprefix(PREFIX)
                out[key] = PREFIX + renames.get(name, name)
            else:
                out[key] = _rewrite_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(value, renames) for value in node]
    return node
