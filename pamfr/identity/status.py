"""PID-32 read as the RNIV says: one status, the identity attributes, the other 0445 codes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from pamfr.identity.model import Attribute, Status

# PAM FR 2.11.1 §6.6.15: of table 0445 only HOMA, FICT and DOUT are RNIV identity attributes.
ATTRIBUTE_CODES: dict[str, Attribute] = {
    "DOUT": Attribute.DOUTEUSE,
    "FICT": Attribute.FICTIVE,
    "HOMA": Attribute.HOMONYME,
}
# The exclusive statuses and their rank (the lower one wins when two come together). QUAL and
# RECUP are not in table 0445; they are read from senders that use them (QUAL as VALI).
STATUS_CODES: dict[str, Status] = {
    "VIDE": Status.PROVISOIRE,
    "PROV": Status.PROVISOIRE,
    "RECUP": Status.RECUPEREE,
    "VALI": Status.VALIDEE,
    "QUAL": Status.VALIDEE,
}
RANK = {Status.PROVISOIRE: 0, Status.RECUPEREE: 1, Status.VALIDEE: 2, Status.QUALIFIEE: 3}
# Codes that bar the INS whatever the status (INS guide EXI ID 24/26: douteuse, fictive; and
# an identity declared invalid or usurped).
INS_BARRING_CODES = frozenset({"DOUT", "FICT", "INVA", "USUR"})


@dataclass(frozen=True, slots=True)
class StatusReading:
    """What one PID-32 says."""

    status: Status  # provisoire, recuperee or validee: qualifiee also needs a kept INS
    attributes: tuple[Attribute, ...] = ()
    other_codes: tuple[str, ...] = ()  # table 0445 codes kept as received (DOUB, HOMD, INVA...)
    validated: bool = False  # VALI (or QUAL) is among the codes
    barring: tuple[str, ...] = ()  # DOUT, FICT, INVA, USUR present
    conflict: tuple[str, ...] = ()  # two exclusive statuses of different rank (PROV~VALI)

    @property
    def claims_qualified(self) -> bool:
        """The sender states a qualified identity: VALI, with nothing that bars the INS."""
        return self.validated and not self.barring


def read_status(pid32: Iterable[str]) -> StatusReading:
    return _read_status(tuple(pid32))


@lru_cache(maxsize=256)  # a feed uses a handful of PID-32 combinations
def _read_status(pid32: tuple[str, ...]) -> StatusReading:
    codes = list(dict.fromkeys(c.strip().upper() for c in pid32 if c and c.strip()))
    statuses = [STATUS_CODES[c] for c in codes if c in STATUS_CODES]
    attributes = tuple(dict.fromkeys(ATTRIBUTE_CODES[c] for c in codes if c in ATTRIBUTE_CODES))
    others = tuple(c for c in codes if c not in ATTRIBUTE_CODES and c not in STATUS_CODES)
    status = min(statuses, key=RANK.__getitem__, default=Status.PROVISOIRE)
    conflict: tuple[str, ...] = ()
    if len({RANK[s] for s in statuses}) > 1:
        conflict = tuple(c for c in codes if c in STATUS_CODES)
    barring = tuple(c for c in codes if c in INS_BARRING_CODES)
    if Attribute.DOUTEUSE in attributes or Attribute.FICTIVE in attributes:
        status = Status.PROVISOIRE
    return StatusReading(
        status=status,
        attributes=attributes,
        other_codes=others,
        validated=status is Status.VALIDEE,
        barring=barring,
        conflict=conflict,
    )


def ins_usable(status: Status | str, active: bool = True, collision: bool = False) -> bool:
    """Only a qualified identity's INS may be used to reference data, and only on an active
    record that does not share it with another active one."""
    return status == Status.QUALIFIEE and active and not collision
