"""The draw's ranking and its verification (pure): fairness over many simulated draws, and a
verifier that catches every kind of tampering with a published draw."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import Counter

from snapshoe.kernel.draw_ranking import commitment_of, entry_key, new_seed, rank, verify

# The chi-square distribution's 99.9 % point for 19 degrees of freedom (20 entrants): a fair
# ranking exceeds it once in a thousand runs.
CHI2_19_999 = 43.820


def _chi_square(wins: Counter[str], entrants: list[str], expected: float) -> float:
    return sum((wins[e] - expected) ** 2 / expected for e in entrants)


def test_the_documented_algorithm_is_hmac_sha256_of_the_entry_id_keyed_by_the_seed() -> None:
    seed = "00" * 31 + "01"
    assert commitment_of(seed) == hashlib.sha256(bytes.fromhex(seed)).hexdigest()
    assert entry_key(seed, "E1") == hmac.new(bytes.fromhex(seed), b"E1", hashlib.sha256).digest()
    ids = [f"E{i}" for i in range(50)]
    by_hand = sorted(ids, key=lambda e: (entry_key(seed, e), e))
    assert rank(seed, [(e, "size-a") for e in ids]) == {"size-a": by_hand}


def test_each_entrant_wins_with_probability_stock_over_entrants() -> None:
    """2,000 draws of 5 pairs among 20 entrants: each should win 500 times; chi-square over the
    20 counts stays under the 99.9 % point (and a biased ranking does not)."""
    entrants = [f"01J{i:023d}" for i in range(20)]
    draws, pairs = 2000, 5
    wins: Counter[str] = Counter()
    first_place: Counter[str] = Counter()
    for _ in range(draws):
        order = rank(new_seed(), [(e, "item") for e in entrants])["item"]
        wins.update(order[:pairs])
        first_place[order[0]] += 1
    expected = draws * pairs / len(entrants)
    assert _chi_square(wins, entrants, expected) < CHI2_19_999, wins
    assert _chi_square(first_place, entrants, draws / len(entrants)) < CHI2_19_999, first_place

    # The same statistic on a ranking that favours early ids fails, so the test can fail.
    biased: Counter[str] = Counter()
    for _ in range(draws):
        order = sorted(entrants, key=lambda e: secrets.randbelow(100) + entrants.index(e) * 3)
        biased.update(order[:pairs])
    assert _chi_square(biased, entrants, expected) > CHI2_19_999


def _settled(seed: str, pairs: dict[str, int], declined: set[str]) -> list[dict[str, object]]:
    """What a correct draw publishes: charge in rank order, a decline passes on."""
    entries = [(f"E{i:03d}", "A" if i % 2 else "B") for i in range(40)]
    out = []
    for item, order in rank(seed, entries).items():
        won = 0
        for place, eid in enumerate(order, 1):
            if won >= pairs[item]:
                state = "lost"
            elif eid in declined:
                state = "payment_failed"
            else:
                state, won = "won", won + 1
            out.append({"id": eid, "item_id": item, "state": state, "rank": place})
    return out


def test_verify_accepts_an_honest_draw_and_names_each_kind_of_tampering() -> None:
    seed = new_seed()
    pairs = {"A": 5, "B": 3}
    honest = _settled(seed, pairs, declined={"E001", "E004"})
    commitment = commitment_of(seed)
    ok = verify(commitment=commitment, seed=seed, entries=honest, pairs=pairs)
    assert ok.ok, ok.problems
    assert ok.winners == 8

    other = new_seed()
    assert not verify(commitment=commitment, seed=other, entries=honest, pairs=pairs).ok

    # A favoured entrant: a lost one marked won instead of the last real winner.
    tampered = [dict(e) for e in honest]
    lost = next(e for e in tampered if e["state"] == "lost" and e["item_id"] == "A")
    last_won = max(
        (e for e in tampered if e["state"] == "won" and e["item_id"] == "A"),
        key=lambda e: int(str(e["rank"])),
    )
    lost["state"], last_won["state"] = "won", "lost"
    verdict = verify(commitment=commitment, seed=seed, entries=tampered, pairs=pairs)
    assert not verdict.ok
    assert any("charged after" in p for p in verdict.problems)

    # A published rank that is not the seed's.
    swapped = [dict(e) for e in honest]
    swapped[0]["rank"], swapped[1]["rank"] = swapped[1]["rank"], swapped[0]["rank"]
    assert not verify(commitment=commitment, seed=seed, entries=swapped, pairs=pairs).ok

    # More winners than pairs; and a pair left unsold while someone lost.
    extra = [dict(e) for e in honest]
    for e in extra:
        if e["item_id"] == "B" and e["state"] == "lost":
            e["state"] = "won"
    assert any(
        "winners for" in p
        for p in verify(commitment=commitment, seed=seed, entries=extra, pairs=pairs).problems
    )
    assert not verify(commitment=commitment, seed=seed, entries=honest, pairs={"A": 6, "B": 3}).ok

    assert not verify(commitment=commitment, seed=None, entries=honest, pairs=pairs).ok
