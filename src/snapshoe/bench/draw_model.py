"""The configuration of a ``bench draw`` run (docs/draws.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class DrawConfig:
    entries: int = 50_000
    sizes: int = 5
    pairs_per_size: int = 200
    decline_share: float = 0.1
    max_seconds: float = 600.0
    seed: int | None = None
    out: Path | None = None
