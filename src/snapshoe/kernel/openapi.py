"""The public OpenAPI of a service, as people integrate it: FastAPI's generated schema,
post-processed once (``install_public_openapi``, called by ``kernel.http.create_service_app``).

- ``/internal`` routes are left out (never routed by the gateway);
- routes that take a bearer token (``kernel.auth`` principals) declare the ``bearerAuth``
  scheme and answer 401 ``unauthorized``;
- routes that need an ``Idempotency-Key`` declare the header (a ``require_key`` dependency, or
  :data:`IDEMPOTENCY_KEY` in the route's ``openapi_extra``);
- every error answer is ``application/problem+json`` with the :data:`PROBLEM_SCHEMA` (not
  FastAPI's default 422 ``HTTPValidationError``), its description naming the codes it can carry;
- a 201 that creates a resource with an ``id`` links to every operation of the same service
  whose path takes that resource's ``<name>_id`` (:func:`_link_created`): OpenAPI links, which
  stateful clients and fuzzers (schemathesis) follow, e.g. ``POST /api/orders`` ->
  ``GET /api/orders/{order_id}``.

docs/openapi.md says how the web tier merges the services' specs into ``/api/openapi.json``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

from snapshoe.kernel.auth import admin_principal, current_principal, verified_principal
from snapshoe.kernel.errors import PROBLEM_JSON
from snapshoe.kernel.idempotency import require_key

INTERNAL_PREFIX = "/internal"
BEARER = "bearerAuth"
PROBLEM_REF = "#/components/schemas/Problem"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; clients switch on `code`, never on the title.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "title": "Type"},
        "title": {"type": "string", "title": "Title"},
        "status": {"type": "integer", "title": "Status"},
        "detail": {"type": "string", "title": "Detail"},
        "code": {"type": "string", "title": "Code"},
    },
    "additionalProperties": True,
}

IDEMPOTENCY_KEY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": "1..255 visible ASCII characters; the same key replays the first answer",
    # What ``kernel.idempotency.require_key`` accepts: visible ASCII (! to ~), not only quotes
    # (it strips surrounding ones). Without the pattern, clients and the fuzzer took any string.
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^[!-~]*[!#-~][!-~]*$",
    },
}
"""The header parameter; a route that reads the key in its body passes
``openapi_extra={"parameters": [IDEMPOTENCY_KEY]}``."""

_TITLES = {
    400: "Bad request",
    401: "Authentication required",
    402: "Payment refused",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    410: "Gone",
    413: "Request body too large",
    422: "Validation failed",
    429: "Too many requests",
    503: "Service unavailable",
}
_NAMED = re.compile(r"`([a-z0-9_]+)`")
# Codes any route of a kind can answer (route-specific ones are in docs/api.md and in the
# route's own response description).
_COMMON_CODES: dict[int, tuple[str, ...]] = {
    404: ("not_found",),
    413: ("payload_too_large",),
    422: ("validation_error",),
    429: ("too_many_requests",),
    503: ("service_unavailable",),
}


def problems(
    *statuses: int, codes: Mapping[int, Iterable[str]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses``: problem answers of ``statuses`` and of ``codes``' keys, each
    naming its codes (the schema's post-processing adds those every route of its kind has)."""
    named = dict(codes or {})
    out: dict[int | str, dict[str, Any]] = {}
    for status in dict.fromkeys([*statuses, *named]):
        listed = ", ".join(f"`{c}`" for c in named.get(status, ()))
        title = _TITLES.get(status, "Error")
        out[status] = {
            "description": f"{title} (code {listed})" if listed else title,
            "content": {PROBLEM_JSON: {}},
        }
    return out


def install_public_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) answer the corrected public schema."""
    generate = app.openapi
    corrected: list[dict[str, Any]] = []  # the generated schema last corrected

    def openapi() -> dict[str, Any]:
        spec = generate()  # FastAPI's cached schema, regenerated when routes change
        if not corrected or corrected[0] is not spec:
            corrected[:] = [public_schema(spec, app.routes)]
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def public_schema(spec: dict[str, Any], routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """The generated ``spec`` corrected in place (and returned); ``routes`` are the app's."""
    spec["paths"] = {
        path: item
        for path, item in spec.get("paths", {}).items()
        if not path.startswith(INTERNAL_PREFIX)
    }
    for route in iter_route_contexts(list(routes)):
        path = route.path_format or route.path or ""
        if isinstance(route.original_route, APIRoute) and path in spec["paths"]:
            for method in route.methods or ():
                operation = spec["paths"][path].get(method.lower())
                if operation is not None:
                    _correct(operation, _calls(route.dependant))
    components = spec.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The access token of POST /api/auth/login (ES256).",
    }
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    _link_created(spec)
    _prune(spec)
    return spec


_METHODS = ("get", "put", "post", "delete", "patch")


def _link_created(spec: dict[str, Any]) -> None:
    """``POST .../<names>`` answering 201 with an ``id`` links to each operation whose path has
    the parameter ``{<name>_id}`` (the singular of the collection's segment: ``orders`` ->
    ``order_id``, ``items`` -> ``item_id``, ``entries`` -> ``entry_id``), the id taken from the
    answer's body. Only within one service's document: the merge keeps them as they are."""
    schemas: dict[str, Any] = spec.get("components", {}).get("schemas", {})
    for path, item in spec["paths"].items():
        post = item.get("post")
        created = (post or {}).get("responses", {}).get("201")
        if not created or not _has_id(created, schemas):
            continue
        segment = path.rstrip("/").rsplit("/", 1)[-1]
        if segment.startswith("{"):
            continue
        param = _singular(segment) + "_id"
        links: dict[str, Any] = {}
        for target_path, target_item in spec["paths"].items():
            if "{" + param + "}" not in target_path:
                continue
            for method in _METHODS:
                target = target_item.get(method)
                if target is not None and target.get("operationId"):
                    links[target["operationId"]] = {
                        "operationId": target["operationId"],
                        "parameters": {param: "$response.body#/id"},
                    }
        if links:
            created.setdefault("links", {}).update(links)


def _has_id(response: dict[str, Any], schemas: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = schemas.get(ref.rsplit("/", 1)[-1], {})
    return "id" in schema.get("properties", {})


def _singular(word: str) -> str:
    if word.endswith("ies"):
        return word[:-3] + "y"
    return word[:-1] if word.endswith("s") else word


def _calls(dependant: Dependant) -> set[Callable[..., Any]]:
    """Every dependency callable of a route, however deeply nested."""
    found: set[Callable[..., Any]] = set()
    stack = list(dependant.dependencies)
    while stack:
        dep = stack.pop()
        if dep.call is not None:
            found.add(dep.call)
        stack.extend(dep.dependencies)
    return found


def _correct(operation: dict[str, Any], calls: set[Callable[..., Any]]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    codes: dict[int, list[str]] = {}
    authenticated = bool(calls & {current_principal, verified_principal, admin_principal})
    if authenticated:
        operation["security"] = [{BEARER: []}]
        codes.setdefault(401, []).append("unauthorized")
    if verified_principal in calls:
        codes.setdefault(403, []).append("email_not_verified")
    if admin_principal in calls:
        codes.setdefault(403, []).append("forbidden")
    parameters: list[dict[str, Any]] = operation.setdefault("parameters", [])
    if require_key in calls and not _has_param(parameters, IDEMPOTENCY_KEY["name"]):
        parameters.append(dict(IDEMPOTENCY_KEY))
    if _has_param(parameters, IDEMPOTENCY_KEY["name"]):
        codes.setdefault(400, []).extend(("idempotency_key_missing", "idempotency_key_invalid"))
        codes.setdefault(409, []).append("idempotency_key_in_use")
        codes.setdefault(422, []).append("idempotency_key_reused")
    if "requestBody" in operation:
        codes.setdefault(400, []).append("invalid_json")
        codes.setdefault(413, []).append("payload_too_large")
    if not parameters:
        operation.pop("parameters")
    for status in codes:
        responses.setdefault(str(status), {})
    for key, response in responses.items():
        if key.isdigit() and int(key) >= 400:
            _problem_response(int(key), response, codes.get(int(key), []))


def _has_param(parameters: list[dict[str, Any]], name: str) -> bool:
    return any(p.get("name", "").lower() == name.lower() for p in parameters)


def _problem_response(status: int, response: dict[str, Any], codes: list[str]) -> None:
    """Problem+json content and a description naming every code (those already named first)."""
    response["content"] = {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}
    described = response.get("description", "")
    base = described.split(" (code ", 1)[0]
    if not base or base in ("Validation Error", "Additional Response"):
        base = _TITLES.get(status, "Error")
    named = [*_NAMED.findall(described), *codes, *_COMMON_CODES.get(status, ())]
    if named:
        base += " (code " + ", ".join(f"`{c}`" for c in dict.fromkeys(named)) + ")"
    response["description"] = base


def _prune(spec: dict[str, Any]) -> None:
    """Keep only the schemas the public paths reach (the internal routes' models go)."""
    schemas: dict[str, Any] = spec["components"]["schemas"]
    prefix = "#/components/schemas/"
    seen: set[str] = set()
    todo = [r for r in _refs(spec["paths"]) if r.startswith(prefix)]
    while todo:
        name = todo.pop().removeprefix(prefix)
        if name not in seen and name in schemas:
            seen.add(name)
            todo.extend(r for r in _refs(schemas[name]) if r.startswith(prefix))
    for name in list(schemas):
        if name not in seen:
            del schemas[name]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)
