"""Potential doublons: two active identities that may be one person.

The key of the rule (the identity-vigilance team's first screen): the birth name, the first
birth given name, the birth date and the sex, with accents, case, hyphens, apostrophes and
spaces folded, so "Lefèvre-Dupont" and "LEFEVRE DUPONT" meet. An identity missing one of the
four has no key and is in no pair.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations

_DROPPED = frozenset("-' \t\u2019\u2010\u2011")


def fold(text: str) -> str:
    """Upper case, without accents, hyphens, apostrophes or spaces: "Lefèvre-Dupont" gives
    "LEFEVREDUPONT"."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = (c for c in decomposed if not unicodedata.combining(c) and c not in _DROPPED)
    return "".join(kept).upper()


@dataclass(frozen=True, slots=True)
class DoublonKey:
    birth_name: str
    first_given_name: str
    birth_date: str
    sex: str


def doublon_key(
    birth_name: str | None,
    birth_given_names: str | None,
    first_given_name: str | None,
    birth_date: str | None,
    sex: str | None,
) -> DoublonKey | None:
    """The key of one identity; the first birth given name is the first of PID-5's birth
    given names, else the first given name. None when one of the four traits is missing."""
    given = (birth_given_names or "").split()
    first = given[0] if given else (first_given_name or "")
    parts = (fold(birth_name or ""), fold(first), (birth_date or "").strip(), (sex or "").strip())
    if not all(parts):
        return None
    return DoublonKey(*parts)


@dataclass(frozen=True, slots=True)
class Candidate:
    patient_id: int
    key: DoublonKey | None


def doublon_pairs(
    candidates: Iterable[Candidate], excluded: set[tuple[int, int]] | None = None
) -> list[tuple[int, int]]:
    """The pairs (smaller id first) of identities sharing a key, without the excluded pairs
    (linked identities, pairs decided "not a doublon"), sorted."""
    groups: dict[DoublonKey, list[int]] = {}
    for c in candidates:
        if c.key is not None:
            groups.setdefault(c.key, []).append(c.patient_id)
    excluded = excluded or set()
    pairs = [
        pair
        for ids in groups.values()
        if len(ids) > 1
        for pair in combinations(sorted(ids), 2)
        if pair not in excluded
    ]
    return sorted(pairs)
