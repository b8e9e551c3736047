"""``GET /api/openapi.json`` (the merged public spec) and ``GET /api/docs`` (a server-rendered
reference of it, no script: the CSP allows only this site's). The gateway routes exactly these
two ``/api`` paths here (docs/api-additions.md). The spec is merged from each service's own
``/openapi.json`` (``settings.service_url``) and cached for :data:`CACHE_SECONDS`; a stale merge
is served while a service cannot be reached, a 503 problem only when nothing was ever merged."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from snapshoe.kernel.errors import Problem, problem_response, service_unavailable
from snapshoe.web.deps import Deps
from snapshoe.web.openapi_merge import PUBLIC_SERVICES, merge_specs

router = APIRouter(include_in_schema=False)

CACHE_SECONDS = 60.0
METHODS = ("get", "post", "put", "patch", "delete")


class SpecCache:
    """The last merge and when it was made; one refresh at a time."""

    def __init__(self) -> None:
        self.spec: dict[str, Any] | None = None
        self.at = 0.0
        self.lock = asyncio.Lock()

    async def get(self, deps: Deps) -> dict[str, Any]:
        if self.spec is not None and time.monotonic() - self.at < CACHE_SECONDS:
            return self.spec
        async with self.lock:
            if self.spec is None or time.monotonic() - self.at >= CACHE_SECONDS:
                try:
                    self.spec = await _merge(deps)
                    self.at = time.monotonic()
                except Problem:
                    if self.spec is None:
                        raise
        return self.spec


async def _merge(deps: Deps) -> dict[str, Any]:
    urls = {name: f"{deps.settings.service_url(name)}/openapi.json" for name in PUBLIC_SERVICES}
    answers = await asyncio.gather(*(deps.api.fetch_json(url) for url in urls.values()))
    specs: dict[str, dict[str, Any]] = {}
    for name, answer in zip(urls, answers, strict=True):
        if answer.status != 200 or not isinstance(answer.body, dict):
            raise service_unavailable(f"The {name} service's API description is unavailable")
        specs[name] = answer.body
    return merge_specs(specs)


def _cache(request: Request) -> SpecCache:
    cache = getattr(request.app.state, "spec_cache", None)
    if not isinstance(cache, SpecCache):
        cache = request.app.state.spec_cache = SpecCache()
    return cache


@router.get("/api/openapi.json")
async def merged_openapi(request: Request) -> Response:
    try:
        spec = await _cache(request).get(request.app.state.deps)
    except Problem as problem:
        return problem_response(problem)
    return Response(orjson.dumps(spec), media_type="application/json")


@router.get("/api/docs")
async def api_docs(request: Request) -> Response:
    deps: Deps = request.app.state.deps
    try:
        spec = await _cache(request).get(deps)
    except Problem as problem:
        return problem_response(problem)
    return deps.templates.TemplateResponse(
        request, "api_docs.html", {"spec": spec, "operations": operations(spec)}
    )


def operations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Each documented operation, flattened for the page: method, path, its parts."""
    out = []
    for path, item in sorted(spec.get("paths", {}).items()):
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            out.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "anchor": f"{method}-{path}".replace("/", "-").strip("-"),
                    "summary": op.get("summary", ""),
                    "description": op.get("description", ""),
                    "secured": bool(op.get("security")),
                    "parameters": op.get("parameters", []),
                    "body": _schema_name(op.get("requestBody", {})),
                    "responses": [
                        {
                            "status": status,
                            "description": r.get("description", ""),
                            "schema": _schema_name(r),
                        }
                        for status, r in op.get("responses", {}).items()
                    ],
                }
            )
    return out


def _schema_name(part: dict[str, Any]) -> str:
    """The schema named by a request body's or a response's first media type."""
    media: list[dict[str, Any]] = list(part.get("content", {}).values())
    schema: dict[str, Any] = media[0].get("schema", {}) if media else {}
    ref = schema.get("$ref", "")
    if isinstance(ref, str) and ref:
        return ref.rsplit("/", 1)[-1]
    return str(schema.get("type", "")) if schema else ""
