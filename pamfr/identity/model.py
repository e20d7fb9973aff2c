"""The patient identity as a message states it: plain typed values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from pamfr.identity.ins import Ins


class _Keep:
    """An HL7 empty field: the receiver keeps what it has (an explicit null `""` clears)."""

    _instance: _Keep | None = None

    def __new__(cls) -> _Keep:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "KEEP"

    def __bool__(self) -> bool:
        return False


KEEP: Final = _Keep()

IPP_TYPE = "PI"
INS_TYPE = "INS"


class Status(StrEnum):
    PROVISOIRE = "provisoire"
    RECUPEREE = "recuperee"
    VALIDEE = "validee"
    QUALIFIEE = "qualifiee"


class Attribute(StrEnum):
    DOUTEUSE = "douteuse"
    FICTIVE = "fictive"
    HOMONYME = "homonyme"


@dataclass(frozen=True, slots=True)
class Identifier:
    value: str
    type: str  # CX-5: PI (IPP), INS, NH, AN...
    authority: str = ""  # CX-4.1 namespace
    oid: str = ""  # CX-4.2 universal id

    @property
    def authority_key(self) -> str:
        """The OID identifies the authority when present, else the namespace."""
        return self.oid or self.authority


@dataclass(frozen=True, slots=True)
class BirthDate:
    """A full or partial birth date, kept with its precision."""

    year: int
    month: int | None = None
    day: int | None = None

    def iso(self) -> str:
        if self.month is None:
            return f"{self.year:04d}"
        if self.day is None:
            return f"{self.year:04d}-{self.month:02d}"
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}"

    @classmethod
    def from_iso(cls, text: str) -> BirthDate:
        parts = [int(p) for p in text.split("-")]
        return cls(*parts)


@dataclass(frozen=True, slots=True)
class IdentityStatus:
    status: Status
    attributes: tuple[Attribute, ...] = ()
    other_codes: tuple[str, ...] = ()  # table 0445 codes kept as received (DOUB, DPOT...)


TextField = str | None | _Keep


@dataclass(frozen=True, slots=True)
class PatientIdentity:
    """What one PID segment (with its ZFD) says of a patient.

    Each demographic field is a value, None (explicit HL7 null: clear it) or KEEP (empty field).
    """

    identifiers: tuple[Identifier, ...]
    ins: Ins | None = None
    birth_name: TextField = KEEP
    first_given_name: TextField = KEEP
    birth_given_names: tuple[str, ...] | None | _Keep = KEEP
    used_name: TextField = KEEP
    used_given_name: TextField = KEEP
    birth_date: BirthDate | None | _Keep = KEEP
    sex: TextField = KEEP
    birth_place_insee: TextField = KEEP
    status: IdentityStatus = field(default_factory=lambda: IdentityStatus(Status.PROVISOIRE))
    identity_mode: TextField = KEEP  # ZFD-5: how the identity was obtained (INSI, CV, SM...)
    insi_query_date: TextField = KEEP  # ZFD-6
    identity_document: TextField = KEEP  # ZFD-7

    @property
    def ipp(self) -> Identifier | None:
        return next((i for i in self.identifiers if i.type == IPP_TYPE), None)

    @property
    def ipps(self) -> tuple[Identifier, ...]:
        return tuple(i for i in self.identifiers if i.type == IPP_TYPE)
