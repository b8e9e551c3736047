"""``/api/openapi.json`` and ``/api/docs`` pass the real gateway without a token and reach
the (web) backend unchanged; only those two spellings do."""

from __future__ import annotations

import pytest
from tests.integration.gateway.conftest import Gateway
from tests.integration.gateway.test_gateway_edge import assert_problem


@pytest.mark.parametrize("path", ["/api/openapi.json", "/api/docs"])
async def test_the_api_description_is_public(gateway: Gateway, path: str) -> None:
    async with gateway.client() as client:
        r = await client.get(path)
    assert r.status_code == 200, r.text
    assert r.json()["path"] == path


@pytest.mark.parametrize("path", ["/api/openapi.jsonx", "/api/docs/x", "/api/redoc"])
async def test_other_spellings_are_a_gateway_404(gateway: Gateway, path: str) -> None:
    async with gateway.client() as client:
        r = await client.get(path)
    assert_problem(r, 404, "not_found")
