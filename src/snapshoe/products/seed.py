"""Demo catalog for ``snapshoe seed``: brands, models, sizes 230-300 mm in 5 mm steps, colors,
a few live products, an upcoming drop a few minutes ahead and a sold-out one. Idempotent: a
product that exists (same brand and name) is left as it is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from snapshoe.kernel.clock import utcnow
from snapshoe.kernel.settings import Settings
from snapshoe.products import admin, rebuild, repository, schemas
from snapshoe.products.bootstrap import open_deps
from snapshoe.products.deps import Deps

SIZES = tuple(range(230, 301, 5))


@dataclass(frozen=True)
class _Model:
    brand: str
    name: str
    price: int
    colors: tuple[str, ...]
    stock: int  # per size and color
    release_in: timedelta  # negative: already released
    limit: int
    description: str


MODELS = (
    _Model(
        "Nike",
        "Air Max 1 '86 OG Big Bubble",
        189_000,
        ("Sport Red", "Royal Blue"),
        6,
        timedelta(days=-20),
        2,
        "The 1986 original, bigger air window and all.",
    ),
    _Model(
        "Adidas",
        "Samba OG",
        139_000,
        ("Cloud White", "Core Black"),
        12,
        timedelta(days=-45),
        0,
        "Gum sole, suede T-toe, the terrace classic.",
    ),
    _Model(
        "New Balance",
        "990v6 Made in USA",
        289_000,
        ("Grey",),
        4,
        timedelta(days=-10),
        2,
        "Pigskin suede and mesh, ENCAP midsole, made in USA.",
    ),
    _Model(
        "Asics",
        "Gel-Kayano 14",
        199_000,
        ("Cream/Black", "White/Midnight"),
        5,
        timedelta(days=-3),
        2,
        "A 2008 runner back in metallic silver overlays.",
    ),
    _Model(
        "Salomon",
        "XT-6",
        249_000,
        ("Black/Phantom",),
        3,
        timedelta(days=-1),
        1,
        "Trail-born, city-worn.",
    ),
    _Model(
        "Jordan",
        "Air Jordan 1 Retro High OG 'Chicago Lost & Found'",
        229_000,
        ("Varsity Red/Black",),
        2,
        timedelta(minutes=5),
        1,
        "The limited drop: one pair per buyer, opening a few minutes after seeding.",
    ),
    _Model(
        "Nike",
        "Dunk Low 'Panda'",
        129_000,
        ("White/Black",),
        0,
        timedelta(days=-60),
        1,
        "Sold out everywhere, including here.",
    ),
)


async def _seed(deps: Deps) -> dict[str, int]:
    created = skipped = items = 0
    now = utcnow()
    for m in MODELS:
        async with deps.sessions() as session:
            existing = await repository.find_product(session, m.brand, m.name)
        if existing is not None:
            skipped += 1
            continue
        slug = "-".join("".join(c if c.isalnum() else " " for c in m.name.lower()).split())[:60]
        product = await admin.create_product(
            deps,
            schemas.ProductCreate(
                name=m.name,
                brand=m.brand,
                description=m.description,
                price=m.price,
                release_at=now + m.release_in,
                per_user_limit=m.limit,
                thumbnail_url=f"https://images.snapshoe.local/{slug}.jpg",
            ),
        )
        created += 1
        for color in m.colors:
            for size in SIZES:
                # Fewer pairs at the edges of the size run, like a real allocation.
                edge = size in (230, 235, 295, 300)
                stock = max(0, m.stock - 2) if edge else m.stock
                await admin.create_item(
                    deps, product.id, schemas.ItemCreate(size=size, color=color, stock=stock)
                )
                items += 1
    await rebuild.ensure_gate(deps)
    return {"products_created": created, "products_existing": skipped, "items_created": items}


async def seed(settings: Settings) -> dict[str, int]:
    async with open_deps(settings) as deps:
        return await _seed(deps)
