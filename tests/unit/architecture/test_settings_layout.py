"""The settings layout: the kernel's shared ``Settings``, each part's own knobs in its
``settings.py``, every knob defined once, and every ``SNAPSHOE_`` name the repository sets read by
some settings class (a knob that moved must not be silently ignored: ``extra="ignore"``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.support.platform import TEST_ENV
from tests.support.settings import PlatformSettings

from snapshoe.gateway.settings import GatewaySettings
from snapshoe.kernel.settings import Settings, settings_for
from snapshoe.orders.settings import LifecycleSettings, OrdersSettings
from snapshoe.payments.settings import PaymentsSettings
from snapshoe.products.settings import ProductsSettings
from snapshoe.sandbox_pg.settings import SandboxSettings
from snapshoe.users.settings import UsersSettings

ROOT = Path(__file__).resolve().parents[3]
OWN = (UsersSettings, ProductsSettings, OrdersSettings, PaymentsSettings, GatewaySettings)
# Names the deploy files set that no settings class reads, on purpose: *_FILE is read by the
# image's entrypoint (it exports the file's content under the plain name); TEST_SLOT by tests;
# SEED by the compose migrate job's shell; SECRETS_DIR is compose's own (a volume path).
NOT_SETTINGS = re.compile(r"^SNAPSHOE_(\w+_FILE|TEST_SLOT|NAME|JWT_|SEED|SECRETS_DIR)$")


def own_fields(cls: type[Settings]) -> set[str]:
    return set(cls.model_fields) - set(Settings.model_fields)


def test_each_knob_is_defined_once() -> None:
    seen: dict[str, str] = {}
    for cls in OWN:
        fields = own_fields(cls)
        assert fields, f"{cls.__name__} has no knob of its own"
        for name in fields:
            assert name not in seen, f"{name} in {seen.get(name)} and {cls.__name__}"
            seen[name] = cls.__name__


def _known_names() -> set[str]:
    names = {f"SNAPSHOE_{f.upper()}" for f in PlatformSettings.model_fields}
    names |= {f"SNAPSHOE_ORDERS_LIFECYCLE_{f.upper()}" for f in LifecycleSettings.model_fields}
    names |= {f"SNAPSHOE_SANDBOX_PG_{f.upper()}" for f in SandboxSettings.model_fields}
    return names


def _names_set_in(path: Path) -> set[str]:
    # NAME: value or NAME=value; not ${NAME:-default}, compose's own interpolation.
    return set(re.findall(r"(?<![{\w])(SNAPSHOE_[A-Z0-9_]+)\s*[:=]", path.read_text()))


@pytest.mark.parametrize(
    "source",
    ["compose.yml", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "deploy/k8s").rglob("*"))],
)
def test_every_name_the_deploy_files_set_is_read(source: str) -> None:
    path = ROOT / source
    if path.is_dir():
        return
    unknown = {n for n in _names_set_in(path) if not NOT_SETTINGS.match(n)} - _known_names()
    assert not unknown, f"{source} sets names no settings class reads: {sorted(unknown)}"


def test_every_name_the_test_platform_sets_is_read() -> None:
    unknown = {n for n in TEST_ENV if not NOT_SETTINGS.match(n)} - _known_names()
    assert not unknown, sorted(unknown)


def test_settings_for_keeps_given_shared_values_and_reads_own_knobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SNAPSHOE_ORDER_PAYMENT_TTL_SECONDS", "42")
    monkeypatch.setenv("SNAPSHOE_NAMESPACE", "from_env")
    shared = Settings(namespace="given", orders_port=19999)
    own = settings_for(OrdersSettings, shared)
    assert (own.namespace, own.orders_port) == ("given", 19999)
    assert own.order_payment_ttl_seconds == 42
    assert settings_for(OrdersSettings, own) is own
    everything = PlatformSettings(order_payment_ttl_seconds=7)
    assert settings_for(OrdersSettings, everything) is everything
