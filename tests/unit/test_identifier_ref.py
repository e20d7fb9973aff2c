"""The history's identifier text, written and read by one pair (identity/model.IdentifierRef):
value^type^authority_key, as stores have always held it."""

from __future__ import annotations

from pamfr.identity.model import Identifier, IdentifierRef


def test_stored_text_is_the_historic_form():
    ident = Identifier("12345", "PI", "HOP", "1.2.250.1.71.1")
    assert ident.ref.stored() == "12345^PI^1.2.250.1.71.1"
    assert Identifier("12345", "PI", "HOP").ref.stored() == "12345^PI^HOP"


def test_parse_reads_back_what_stored_wrote_even_with_a_caret_in_the_value():
    for ref in (IdentifierRef("12345", "PI", "HOP"), IdentifierRef("A^B", "NH", "1.2.3")):
        assert IdentifierRef.parse(ref.stored()) == ref


def test_of_row_reads_an_identifier_row():
    row = {"value": "9", "type": "PI", "authority": "HOP", "oid": "", "authority_key": "HOP"}
    assert IdentifierRef.of_row(row) == IdentifierRef("9", "PI", "HOP")
