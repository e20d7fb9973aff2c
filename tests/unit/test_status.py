"""The RNIV status table of issue 3, row by row, and the attributes (pure domain)."""

from __future__ import annotations

import pytest

from pamfr.identity.errors import MessageRejected
from pamfr.identity.model import Attribute, Status
from pamfr.identity.status import derive_status, ins_usable

P, R, V, Q = Status.PROVISOIRE, Status.RECUPEREE, Status.VALIDEE, Status.QUALIFIEE


@pytest.mark.parametrize(
    ("pid32", "has_ins", "mode", "status"),
    [
        # QUAL requires an INS (the AE case is below)
        (["QUAL"], True, None, Q),
        # VALI: qualifiee with an INS, validee without
        (["VALI"], True, None, Q),
        (["VALI"], True, "INSI", Q),
        (["VALI"], False, None, V),
        (["VALI"], False, "INSI", V),
        # RECUP, whatever the INS
        (["RECUP"], True, None, R),
        (["RECUP"], False, None, R),
        # PROV and ZFD-5 INSI, whatever the INS
        (["PROV"], False, "INSI", R),
        (["PROV"], True, "INSI", R),
        (["PROV"], False, "insi", R),
        # PROV with an INS
        (["PROV"], True, None, R),
        (["PROV"], True, "CV", R),
        # PROV, VIDE, empty or absent without an INS
        (["PROV"], False, None, P),
        (["PROV"], False, "CV", P),
        (["VIDE"], False, None, P),
        ([""], False, None, P),
        ([], False, None, P),
        (["VIDE"], False, "SM", P),
        # lower case and blanks as some senders write them
        ([" vali "], True, None, Q),
    ],
)
def test_status_table(pid32, has_ins, mode, status):
    assert derive_status(pid32, has_ins=has_ins, identity_mode=mode).status is status


def test_qual_without_ins_is_ae_101():
    with pytest.raises(MessageRejected) as caught:
        derive_status(["QUAL"], has_ins=False)
    (problem,) = caught.value.problems
    assert (caught.value.ack_code, problem.code, problem.location) == ("AE", 101, "PID^1^3")


@pytest.mark.parametrize("code", ["QUAL", "VALI", "RECUP", "PROV"])
@pytest.mark.parametrize(
    ("attribute_code", "attribute"), [("DOUT", "douteuse"), ("FICT", "fictive")]
)
def test_douteuse_or_fictive_forces_provisoire(code, attribute_code, attribute):
    result = derive_status([code, attribute_code], has_ins=True, identity_mode="INSI")
    assert result.status is P
    assert result.attributes == (Attribute(attribute),)
    assert not ins_usable(result.status)


def test_attribute_before_the_status_code():
    result = derive_status(["FICT", "VALI"], has_ins=True)
    assert (result.status, result.attributes) == (P, (Attribute.FICTIVE,))


@pytest.mark.parametrize("code", ["HOMA", "HOMD"])
def test_homonyme_keeps_the_status(code):
    result = derive_status(["VALI", code], has_ins=True)
    assert (result.status, result.attributes) == (Q, (Attribute.HOMONYME,))


def test_homa_and_homd_give_one_homonyme():
    result = derive_status(["VALI", "HOMD", "HOMA"], has_ins=False)
    assert result.attributes == (Attribute.HOMONYME,)


def test_several_attributes_in_order():
    result = derive_status(["PROV", "HOMA", "DOUT", "FICT"], has_ins=False)
    assert result.attributes == (Attribute.HOMONYME, Attribute.DOUTEUSE, Attribute.FICTIVE)
    assert result.status is P


@pytest.mark.parametrize(
    "codes",
    [["DOUB"], ["DPOT", "COLP"], ["DESA", "DOUA", "COLV", "FILI", "CACH", "ANOM"]],
)
def test_other_table_0445_codes_kept_as_received(codes):
    result = derive_status(["VALI", *codes, "VALI"], has_ins=True)
    assert result.status is Q
    assert result.other_codes == tuple(codes)
    assert result.attributes == ()


def test_other_codes_are_not_repeated_and_status_codes_are_not_kept():
    result = derive_status(["PROV", "IDVER", "IDVER", "VIDE", "INVA"], has_ins=False)
    assert result.other_codes == ("IDVER", "INVA")


@pytest.mark.parametrize(("status", "usable"), [(Q, True), (V, False), (R, False), (P, False)])
def test_ins_usable_only_when_qualifiee(status, usable):
    assert ins_usable(status) is usable
    assert ins_usable(status.value) is usable
