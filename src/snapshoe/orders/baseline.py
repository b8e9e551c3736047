"""Benchmark-only code of the orders service (``snapshoe bench drop --compare``), kept here so
that no buyer-facing module carries it.

- The floor route ``GET /api/orders/-/floor``: mounted only when ``settings.bench_baselines``
  is true (bootstrap); otherwise the path is unknown, as any other.
- The row-lock baseline of products (``stock_mode == "db_lock"``): its sold-out refusals say
  so, orders then keeps no sold-out hint (every attempt asks products' database, which is the
  point of the baseline), and the field is never passed on to the buyer.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends
from starlette.responses import Response

from snapshoe.kernel.auth import Principal, verified_principal

# Fields of products' refusals meant for orders alone, not passed on to the buyer.
INTERNAL_FIELDS = frozenset({"stock_mode"})


def is_row_lock_refusal(body: dict[str, Any]) -> bool:
    """A refusal of products' row-lock baseline: no sold-out hint is taken from it."""
    return body.get("stock_mode") == "db_lock"


floor_router = APIRouter(prefix="/api/orders", tags=["bench"])


@floor_router.get("/-/floor", include_in_schema=False)
async def floor(buyer: Annotated[Principal, Depends(verified_principal)]) -> Response:
    """The benchmark floor: the same gateway, JWT checks, service and token verification as an
    order, and nothing else (no DB, no Redis). Mounted before the orders router, whose
    ``/{order_id}`` would otherwise take ``-``."""
    return Response(orjson.dumps({"user_id": buyer.user_id}), media_type="application/json")
