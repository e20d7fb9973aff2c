"""The potential-doublon rule (docs/identity-rules.md M2), pure."""

from __future__ import annotations

from pamfr.identity.doublons import Candidate, DoublonKey, doublon_key, doublon_pairs, fold


def test_fold_drops_accents_case_hyphens_apostrophes_and_spaces():
    assert fold("Lefèvre-Martin") == "LEFEVREMARTIN"
    assert fold("LEFEVRE MARTIN") == "LEFEVREMARTIN"
    assert fold("d'Ârcy") == fold("D ARCY") == "DARCY"
    assert fold("Zoé") == fold("ZOE")
    assert fold("Zoé") != fold("Zoa")


def test_the_key_is_birth_name_first_birth_given_name_birth_date_and_sex():
    key = doublon_key("Lefèvre-Martin", "Zoé Anne", "Zoé", "1980-01-01", "F")
    assert key == DoublonKey("LEFEVREMARTIN", "ZOE", "1980-01-01", "F")
    # the first birth given name wins over the first given name
    assert doublon_key("X", "Anne Zoé", "Zoé", "1980", "F").first_given_name == "ANNE"
    # without birth given names, the first given name
    assert doublon_key("X", None, "Zoé", "1980", "F").first_given_name == "ZOE"


def test_an_identity_missing_one_of_the_four_traits_has_no_key():
    assert doublon_key(None, "ZOE", "ZOE", "1980-01-01", "F") is None
    assert doublon_key("X", None, None, "1980-01-01", "F") is None
    assert doublon_key("X", "ZOE", "ZOE", None, "F") is None
    assert doublon_key("X", "ZOE", "ZOE", "1980-01-01", "") is None
    assert doublon_key("-", "ZOE", "ZOE", "1980-01-01", "F") is None  # nothing left once folded


def test_pairs_share_a_key_and_leave_out_the_excluded_pairs():
    same = doublon_key("Lefèvre", "Zoé", None, "1980-01-01", "F")
    other_sex = doublon_key("LEFEVRE", "ZOE", None, "1980-01-01", "M")
    candidates = [
        Candidate(7, same),
        Candidate(3, doublon_key("LEFEVRE", "ZOE", None, "1980-01-01", "F")),
        Candidate(5, doublon_key("lefevre", "zoe", None, "1980-01-01", "F")),
        Candidate(9, other_sex),
        Candidate(11, None),
    ]
    assert doublon_pairs(candidates) == [(3, 5), (3, 7), (5, 7)]
    assert doublon_pairs(candidates, excluded={(3, 7)}) == [(3, 5), (5, 7)]


def test_fold_spells_ligatures_out_as_insi_writes_them():
    # a name typed at the desk with its ligature meets the INSi spelling (Œ as OE)
    assert fold("Lœuvre") == fold("LOEUVRE") == "LOEUVRE"
    assert fold("LŒUVRE") == "LOEUVRE"
    assert fold("Lætitia") == fold("LAETITIA")
    key = doublon_key("Cœur", "Lætitia", None, "1980-01-01", "F")
    assert key == doublon_key("COEUR", "LAETITIA", None, "1980-01-01", "F")
