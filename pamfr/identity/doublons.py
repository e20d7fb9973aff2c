"""Potential doublons: two active identities that may be one person.

The key of the rule (the identity-vigilance team's first screen): the birth name, the first
birth given name, the birth date and the sex, with accents, case, hyphens, apostrophes and
spaces folded, so "Lefèvre-Dupont" and "LEFEVRE DUPONT" meet. An identity missing one of the
four has no key and is in no pair.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from itertools import combinations
from typing import NamedTuple

from pamfr.identity.names import LIGATURES

_DROPPED = "-' \t\u2019\u2010\u2011"
_DROP = str.maketrans("", "", _DROPPED)


@lru_cache(maxsize=65536)  # names repeat: a store has far fewer names than identities
def fold(text: str) -> str:
    """Upper case, without accents, hyphens, apostrophes or spaces, ligatures spelt out:
    "Lefèvre-Dupont" gives "LEFEVREDUPONT", "Cœur" "COEUR"."""
    if text.isascii():
        return text.translate(_DROP).upper()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    # Œ, Æ... have no decomposition: spelt out as INSi writes them (OE, AE)
    return kept.translate(LIGATURES).translate(_DROP).upper()


class DoublonKey(NamedTuple):  # a tuple: built once per identity of the store
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
    if not (birth_name and birth_date and sex):
        return None
    given = birth_given_names.split(None, 1) if birth_given_names else None
    first = fold(given[0] if given else (first_given_name or ""))
    name = fold(birth_name)
    if not (name and first and birth_date.strip() and sex.strip()):
        return None
    return DoublonKey(name, first, birth_date.strip(), sex.strip())


class Candidate(NamedTuple):
    patient_id: int
    key: DoublonKey | None


def doublon_pairs(
    candidates: Iterable[Candidate], excluded: set[tuple[int, int]] | None = None
) -> list[tuple[int, int]]:
    """The pairs (smaller id first) of identities sharing a key, without the excluded pairs
    (linked identities, pairs decided "not a doublon"), sorted."""
    groups: dict[DoublonKey, list[int]] = {}
    for patient_id, key in candidates:
        if key is not None:
            groups.setdefault(key, []).append(patient_id)
    excluded = excluded or set()
    pairs = [
        pair
        for ids in groups.values()
        if len(ids) > 1
        for pair in combinations(sorted(ids), 2)
        if pair not in excluded
    ]
    return sorted(pairs)
