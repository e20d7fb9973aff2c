"""Which identifiers of PID-3 and MRG-1 state an INS: those never stored as identifiers.

PAM FR 2.11.1 types the INS `INS` in CX-5; older or non-conformant feeds type it `INS-NIR` or
`INS-NIA`, or leave CX-5 empty, or name the INS authority by its namespace alone. Any of them,
and any identifier under an INS authority's OID or namespace but the billing NIR (CX-5 `NH`,
Annex N N.1: never the INS), is an INS statement: it goes
through the INS gate (rules.choose_ins and what follows) and, refused, is kept in the history
note only, never among the patient's identifiers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pamfr.identity.ins import INS_OIDS
from pamfr.identity.model import INS_TYPE, Identifier, StatedIns

INS_TYPES = frozenset({INS_TYPE, "INS-NIR", "INS-NIA"})
BILLING_NIR_TYPE = "NH"
HL7_NULL = '""'
# The namespaces of the INS authorities (Annex N N.1; the NIA's is spelt both ways in the wild).
INS_NAMESPACES = frozenset({"ASIP-SANTE-INS-NIR", "ASIP-SANTE-INS-NIA"})


def states_ins(identifier: Identifier) -> bool:
    if identifier.type in INS_TYPES:
        return True
    if identifier.type == BILLING_NIR_TYPE:
        return False
    return identifier.oid in INS_OIDS or identifier.authority.strip().upper() in INS_NAMESPACES


@dataclass(frozen=True, slots=True)
class SortedIdentifiers:
    """A PID-3 or MRG-1 read: the identifiers a patient may hold, the INS as stated, and
    whether `""` was sent under an INS authority (§4.4.3: the INS is deleted)."""

    identifiers: tuple[Identifier, ...]
    ins: tuple[StatedIns, ...]
    ins_cleared: bool


def sort_identifiers(stated: Iterable[Identifier]) -> SortedIdentifiers:
    kept: list[Identifier] = []
    ins: list[StatedIns] = []
    cleared = False
    for ident in stated:
        if states_ins(ident):
            if ident.value == HL7_NULL:
                cleared = True
            elif ident.value:
                ins.append(StatedIns(ident.value, ident.oid, ident.authority))
        elif ident.value and ident.value != HL7_NULL:
            kept.append(ident)
    return SortedIdentifiers(tuple(kept), tuple(ins), cleared)
