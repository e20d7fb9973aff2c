"""Name folding for search (pamfr/identity/names.py)."""

from __future__ import annotations

import pytest

from pamfr.identity.names import fold


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("LÉVÊQUE", "leveque"),
        ("Hélène", "helene"),
        ("HÉLÈNE", "helene"),
        ("FRANÇOIS", "francois"),
        ("CŒUR", "coeur"),
        ("LÆTITIA", "laetitia"),
        ("GROẞ", "gross"),
        ("D'ARTAGNAN-LÉON", "d'artagnan-leon"),
        ("  DE   LA  FONTAINE ", "de la fontaine"),
        ("ÑÚÑEZ", "nunez"),
    ],
)
def test_case_accents_and_ligatures_fold_away(name, key):
    assert fold(name) == key


def test_no_name_has_no_key():
    assert fold(None) is None
    assert fold("   ") is None


def test_a_folded_prefix_is_a_prefix_of_the_folded_name():
    assert fold("LÉVÊQUE").startswith(fold("lévê"))
