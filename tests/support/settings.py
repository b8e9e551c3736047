"""Every part's settings in one class, for tests that run several parts in one process.

Each service reads its own knobs (``OrdersSettings``, ...) on top of the kernel's shared
``Settings``; a test that sets a knob of any of them builds this, and hands it to any part: it
is an instance of each, so ``settings_for`` passes it through unchanged."""

from __future__ import annotations

from snapshoe.gateway.settings import GatewaySettings
from snapshoe.orders.settings import OrdersSettings
from snapshoe.payments.settings import PaymentsSettings
from snapshoe.products.settings import ProductsSettings
from snapshoe.users.settings import UsersSettings
from snapshoe.web.settings import WebSettings


class PlatformSettings(
    UsersSettings, ProductsSettings, OrdersSettings, PaymentsSettings, GatewaySettings, WebSettings
):
    """The shared settings and every service's own knobs."""
