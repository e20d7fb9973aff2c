"""Names as searches compare them: case and accents folded, so that HÉLÈNE, Hélène and helene
are one key (FHIR R4 string search, §3.1.1.5.3 of the search page: "case- and
accent-insensitive"). Pure; the store keeps each searched name folded next to it."""

from __future__ import annotations

import unicodedata

# Letters that Unicode does not decompose into a base letter and a mark.
LIGATURES = str.maketrans({"œ": "oe", "æ": "ae", "ø": "o", "đ": "d", "ł": "l", "ı": "i"})


def fold(text: str | None) -> str | None:
    """The search key of a name: lower case, without accents or ligatures, spaces collapsed
    (punctuation such as - and ' is kept); None for no name."""
    if text is None:
        return None
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    folded = " ".join(bare.translate(LIGATURES).split())
    return folded or None
