"""Fuzzing the API (issue 18): schemathesis against each service's own ``/openapi.json`` (at
its port) and against the merged public spec (``/api/openapi.json``) through the gateway.

Each operation runs as a real verified buyer, ``/api/admin`` routes as an admin (tokens minted
per request: ``tests/support/fuzz.py``). The checks: no 5xx but a 503 with Retry-After, no
response outside its own schema, no problem+json without a ``code``; nothing is "allowed".

The short budget here (5 examples an operation, a fixed seed, no coverage phase) is CI's; a
long run is ``SNAPSHOE_FUZZ_EXAMPLES=200 uv run pytest tests/e2e/test_fuzz.py``
(docs/reliability.md, "Fuzzing the API").

The fuzzer works on a drop of its own: a fresh product with two sizes and an order of its
buyer, whose ids replace the generated ones in about half the cases (path parameters and the
``item_id``/``order_id``/``product_id`` fields of a body), so it reaches past the 404s. It
creates products of its own (``POST /api/admin/products``), with random names and brands,
which no other test lists (they filter by their own brand or id). No operation is excluded.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis.generation.stateful.state_machine import APIStateMachine
from tests.integration.orders.helpers import OrdersEnv, mint_buyer
from tests.support import fuzz
from tests.support.net import fresh_address
from tests.support.platform import Platform

TARGETS = (*fuzz.SERVICES, "gateway")

SETTINGS = hypothesis.settings(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=list(hypothesis.HealthCheck),
)


@dataclass
class World:
    """The fuzzer's own drop, identities and session, shared by every target."""

    identities: fuzz.Identities
    known: dict[str, str]
    tallies: dict[str, fuzz.Tally]
    address: str

    def session(self) -> Any:
        return fuzz.session_from(self.address)


@pytest.fixture(scope="module")
async def world(platform: Platform) -> AsyncIterator[World]:
    env = OrdersEnv(platform)
    try:
        async with env.client() as client:
            buyer = await platform.verified_user(client)
            product, items = await env.drop(
                client, [50, 50], name=f"Fuzz {secrets.token_hex(3)}", opens_in=timedelta(hours=-1)
            )
            # The buyer's own order, so GET/cancel/pay reach a real one of theirs.
            own = await client.post(
                "/api/orders",
                json={"lines": [{"item_id": items[1]["id"], "quantity": 1}]},
                headers={
                    **fuzz.Identities(platform.settings, buyer.id, buyer.id).headers_for(""),
                    "Idempotency-Key": f"fuzz-{secrets.token_hex(6)}",
                },
            )
            assert own.status_code == 201, own.text
        known = {
            "product_id": product["id"],
            "item_id": items[1]["id"],
            "order_id": own.json()["id"],
        }
        admin = mint_buyer(platform.settings, roles=("admin",))
        made = World(
            identities=fuzz.Identities(platform.settings, buyer.id, admin.id),
            known=known,
            tallies={},
            address=fresh_address(),
        )
        yield made
        # The figures of the run (shown with -s): operations, cases, statuses, time.
        for name, tally in made.tallies.items():
            print(tally.summary(name))
    finally:
        await env.aclose()


def _substitute(value: Any, known: dict[str, str]) -> Any:
    """``value`` with every ``*_id`` field the fuzzer has a real one for replaced by it."""
    if isinstance(value, dict):
        return {
            k: known[k] if k in known and isinstance(v, str) else _substitute(v, known)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute(v, known) for v in value]
    return value


def _install_known_ids(schema: Any, known: dict[str, str]) -> None:
    @schema.hook  # type: ignore[untyped-decorator]
    def flatmap_case(context: Any, case: Any) -> Any:
        def pick(real: bool) -> Any:
            if real:
                if case.path_parameters:
                    case.path_parameters = _substitute(case.path_parameters, known)
                if isinstance(case.body, dict | list):
                    case.body = _substitute(case.body, known)
            return case

        return st.booleans().map(pick)


def _load(platform: Platform, world: World, target: str) -> Any:
    if target == "gateway":
        base = platform.gateway
        spec_url = f"{base}/api/openapi.json"
    else:
        base = platform.url(target)
        spec_url = f"{base}/openapi.json"
    schema = schemathesis.openapi.from_url(spec_url, config=fuzz.fuzz_config(base))
    _install_known_ids(schema, world.known)
    return schema


@pytest.fixture(params=TARGETS)
def api_schema(request: pytest.FixtureRequest, platform: Platform, world: World) -> Any:
    target: str = request.param
    world.tallies[target] = fuzz.Tally()
    request.node.fuzz_target = target
    # schemathesis 4.32's lazy schemas rename the test item through ``Node._nodeid``, which
    # pytest 9.2 no longer has (it keeps ``_id``): give it the attribute it reads.
    request.node._nodeid = request.node.nodeid
    return _load(platform, world, target)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(scope="module")
def session(world: World) -> Iterator[Any]:
    s = world.session()
    try:
        yield s
    finally:
        s.close()


@schema.parametrize()
@SETTINGS
def test_fuzz(case: schemathesis.Case[Any], world: World, session: Any, request: Any) -> None:
    """Every operation of every target, positive and negative cases."""
    response = case.call(session=session, headers=world.identities.headers_for(case.path))
    world.tallies[request.node.fuzz_target].record(case.operation.label, response.status_code)
    case.validate_response(response, checks=fuzz.CHECKS)


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_stateful(target: str, platform: Platform, world: World, session: Any) -> None:
    """Sequences that follow the specs' links (declared by ``kernel.openapi``, and those
    schemathesis infers), e.g. create a product, add a size, patch it, read it back."""
    loaded = _load(platform, world, target)
    identities = world.identities
    tally = world.tallies[f"{target} stateful"] = fuzz.Tally()
    failures: list[str] = []

    class Machine(loaded.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
            return {"session": session, "headers": identities.headers_for(case.path)}

        def after_call(self, response: schemathesis.Response, case: schemathesis.Case[Any]) -> None:
            tally.record(case.operation.label, response.status_code)

        def validate_response(
            self, response: schemathesis.Response, case: schemathesis.Case[Any], **kw: Any
        ) -> None:
            try:
                case.validate_response(response, checks=fuzz.CHECKS)
            except Exception as exc:
                failures.append(f"{case.operation.label}: {exc}")
                raise

    assert issubclass(Machine, APIStateMachine)
    try:
        Machine.run(
            settings=hypothesis.settings(
                SETTINGS, max_examples=max(2, fuzz.budget() // 2), stateful_step_count=6
            )
        )
    except FlakyStrategyDefinition:
        # The platform is live: a step's answer (a 429, a cart another step filled) can differ
        # when Hypothesis replays a sequence, so the links it follows differ and it stops
        # ("inconsistent data generation"), as schemathesis' own runner does. Not a finding;
        # every answer it did get was checked, and a failure among them is in ``failures``.
        tally.notes.append("stopped early: a replay met different answers")
    assert not failures, "\n\n".join(failures)
