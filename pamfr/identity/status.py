"""The RNIV identity status and attributes, derived from PID-32, the INS and ZFD-5."""

from __future__ import annotations

from collections.abc import Iterable

from pamfr.identity.errors import MessageRejected, Problem
from pamfr.identity.model import Attribute, IdentityStatus, Status

_ATTRIBUTE_CODES: dict[str, Attribute] = {
    "DOUT": Attribute.DOUTEUSE,
    "FICT": Attribute.FICTIVE,
    "HOMA": Attribute.HOMONYME,
    "HOMD": Attribute.HOMONYME,
}
_STATUS_CODES = {"QUAL", "VALI", "RECUP", "PROV", "VIDE"}


def derive_status(
    pid32: Iterable[str], has_ins: bool, identity_mode: str | None = None
) -> IdentityStatus:
    """Apply the status table of the PAM FR policy (docs: pamfr-fr.md sections 4 and 10).

    Raises MessageRejected (101 at PID^1^3) for QUAL without an INS.
    """
    codes = [c.strip().upper() for c in pid32 if c and c.strip()]
    present = set(codes)
    attributes: list[Attribute] = []
    for code in codes:
        attribute = _ATTRIBUTE_CODES.get(code)
        if attribute and attribute not in attributes:
            attributes.append(attribute)
    others = tuple(
        dict.fromkeys(c for c in codes if c not in _ATTRIBUTE_CODES and c not in _STATUS_CODES)
    )

    if "QUAL" in present:
        if not has_ins:
            raise MessageRejected(
                Problem(101, "PID^1^3", "PID-32 says QUAL but PID-3 carries no INS")
            )
        status = Status.QUALIFIEE
    elif "VALI" in present:
        status = Status.QUALIFIEE if has_ins else Status.VALIDEE
    elif "RECUP" in present or (
        "PROV" in present and (has_ins or (identity_mode or "").upper() == "INSI")
    ):
        status = Status.RECUPEREE
    else:
        status = Status.PROVISOIRE

    if Attribute.DOUTEUSE in attributes or Attribute.FICTIVE in attributes:
        status = Status.PROVISOIRE
    return IdentityStatus(status=status, attributes=tuple(attributes), other_codes=others)


def ins_usable(status: Status | str) -> bool:
    return status == Status.QUALIFIEE
