"""The draw's commit-reveal seed and its ranking: pure functions, no I/O, so that the products
worker that draws, ``snapshoe draws verify`` and ``bench draw`` (anyone's recomputation) run
the very same code; in the kernel because the checkers are not the service.

The algorithm (docs/draws.md, written so that it can be re-implemented elsewhere):

- seed: 32 bytes from the operating system's CSPRNG (``secrets.token_bytes``), kept secret
  until the draw; ``commitment`` = lowercase hex of SHA-256(seed), published when entries open;
- each entry's key: HMAC-SHA256 with the seed as the key over the entry id's ASCII bytes;
- each size (``item_id``) ranks its entries (withdrawn ones excluded) by key, as bytes,
  ascending; ties (probability about 2^-256) by entry id. Rank 1 is charged first.

Sorting by keys that nobody could predict before the reveal (and nobody can choose after the
commitment) is a uniformly random order of the entrants.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

SEED_BYTES = 32


def new_seed() -> str:
    """A fresh seed, as 64 lowercase hex characters."""
    return secrets.token_bytes(SEED_BYTES).hex()


def commitment_of(seed_hex: str) -> str:
    """What is published before the draw: lowercase hex SHA-256 of the seed's bytes."""
    return hashlib.sha256(bytes.fromhex(seed_hex)).hexdigest()


def entry_key(seed_hex: str, entry_id: str) -> bytes:
    return hmac.new(bytes.fromhex(seed_hex), entry_id.encode("ascii"), hashlib.sha256).digest()


def rank(seed_hex: str, entries: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """``(entry_id, item_id)`` pairs -> per item, the entry ids in rank order (first = rank 1)."""
    by_item: dict[str, list[tuple[bytes, str]]] = defaultdict(list)
    for entry_id, item_id in entries:
        by_item[item_id].append((entry_key(seed_hex, entry_id), entry_id))
    return {item: [eid for _, eid in sorted(keyed)] for item, keyed in by_item.items()}


# --- verification -------------------------------------------------------------------------

CHARGED = frozenset(("won", "payment_failed"))


@dataclass
class Verdict:
    """What a recomputation of a published draw found; ``ok`` when nothing is wrong."""

    problems: list[str] = field(default_factory=list)
    checked_entries: int = 0
    winners: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(
    *,
    commitment: str,
    seed: str | None,
    entries: Sequence[Mapping[str, object]],
    pairs: Mapping[str, int],
) -> Verdict:
    """Check a published draw: the seed matches the commitment; each entry's published rank is
    the recomputed one; walking each size's ranking, every entrant was charged in rank order
    (``won`` or ``payment_failed``) until the size's pairs were won, and only then did anyone
    lose. ``entries``: ``{id, item_id, state, rank}`` of every entry not withdrawn; ``pairs``:
    pairs per item at the draw."""
    out = Verdict(checked_entries=len(entries))
    if seed is None:
        out.problems.append("the seed is not revealed yet")
        return out
    try:
        if commitment_of(seed) != commitment:
            out.problems.append("sha256(seed) is not the published commitment")
    except ValueError:
        out.problems.append("the seed is not 64 hex characters")
        return out
    state_of = {str(e["id"]): str(e["state"]) for e in entries}
    published = {str(e["id"]): e.get("rank") for e in entries}
    ranking = rank(seed, ((str(e["id"]), str(e["item_id"])) for e in entries))
    for item, order in sorted(ranking.items()):
        won = 0
        lost_seen = None
        for place, eid in enumerate(order, start=1):
            if published[eid] != place:
                out.problems.append(f"entry {eid}: published rank {published[eid]}, not {place}")
            state = state_of[eid]
            if state in CHARGED:
                if lost_seen is not None:
                    out.problems.append(
                        f"item {item}: entry {eid} (rank {place}) was charged after "
                        f"{lost_seen} lost"
                    )
                won += state == "won"
            elif state == "lost":
                lost_seen = lost_seen or eid
            else:
                out.problems.append(f"entry {eid} is {state}, not decided")
        limit = pairs.get(item, 0)
        if won > limit:
            out.problems.append(f"item {item}: {won} winners for {limit} pairs")
        if lost_seen is not None and won < limit:
            out.problems.append(
                f"item {item}: {won} winners for {limit} pairs, yet {lost_seen} lost"
            )
        out.winners += won
    return out
