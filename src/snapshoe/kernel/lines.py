"""Order and reservation lines: the one ``Line`` and the one way to merge duplicates, shared by
orders (which keeps the buyer's order) and products (which sorts by item id for its locks)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Line:
    item_id: str
    quantity: int


def merge_lines(lines: Iterable[Line]) -> list[Line]:
    """One line per item (quantities added), in first-seen order."""
    merged: dict[str, int] = {}
    for line in lines:
        merged[line.item_id] = merged.get(line.item_id, 0) + line.quantity
    return [Line(i, q) for i, q in merged.items()]
