"""The INS matricule (NIR or NIA) and its key check."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class InsKind(StrEnum):
    NIR = "NIR"
    NIA = "NIA"
    NIR_TEST = "NIR-TEST"
    NIR_DEMO = "NIR-DEMO"


INS_OIDS: dict[str, InsKind] = {
    "1.2.250.1.213.1.4.8": InsKind.NIR,
    "1.2.250.1.213.1.4.9": InsKind.NIA,
    "1.2.250.1.213.1.4.10": InsKind.NIR_TEST,
    "1.2.250.1.213.1.4.11": InsKind.NIR_DEMO,
}

# Sex digit, year, month, department (2 digits or 2A/2B), commune, order, key.
_MATRICULE = re.compile(r"^[0-9]{5}(?:[0-9]{2}|2A|2B)[0-9]{8}$")


class InvalidIns(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Ins:
    value: str
    oid: str

    @property
    def kind(self) -> InsKind:
        return INS_OIDS[self.oid]


def nir_key(body: str) -> int:
    """The key of a 13-character NIR body: 97 - (body mod 97); Corsica 2A -> 19, 2B -> 18."""
    digits = body.upper().replace("2A", "19", 1).replace("2B", "18", 1)
    return 97 - int(digits) % 97


def check_ins(value: str, oid: str) -> Ins:
    """Return the INS, or raise InvalidIns saying what is wrong with it."""
    if oid not in INS_OIDS:
        raise InvalidIns(f"unknown INS assigning authority OID {oid or '(none)'}")
    if len(value) != 15:
        raise InvalidIns(f"INS matricule must be 15 characters, got {len(value)}")
    if not _MATRICULE.match(value.upper()):
        raise InvalidIns("INS matricule has characters outside its format")
    body, key = value[:13], int(value[13:])
    if nir_key(body) != key:
        raise InvalidIns("INS matricule key does not match (97 - body mod 97)")
    return Ins(value=value.upper(), oid=oid)
