"""The patient identity as a message states it, and as the store holds it: plain typed values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Final

from pamfr.identity.findings import Note


class _Keep:
    """An HL7 empty field or component: the receiver keeps what it has (`""` clears it)."""

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
    type: str  # CX-5: PI (IPP), NH, AN...
    authority: str = ""  # CX-4.1 namespace
    oid: str = ""  # CX-4.2 universal id

    @property
    def authority_key(self) -> str:
        """The OID identifies the authority when present, else the namespace."""
        return self.oid or self.authority

    @property
    def has_authority(self) -> bool:
        return bool(self.oid or self.authority)

    @property
    def ref(self) -> IdentifierRef:
        return IdentifierRef(self.value, self.type, self.authority_key)


@dataclass(frozen=True, slots=True)
class IdentifierRef:
    """An identifier as the history records it: value, type and authority key (the OID when
    there was one, else the namespace). Stored as the text `value^type^authority_key`; the
    value may hold `^`, the type and the key do not."""

    value: str
    type: str
    authority_key: str

    def stored(self) -> str:
        return f"{self.value}^{self.type}^{self.authority_key}"

    @classmethod
    def parse(cls, text: str) -> IdentifierRef:
        value, type_, key = text.rsplit("^", 2)
        return cls(value, type_, key)

    @classmethod
    def of_row(cls, row: Mapping[str, object]) -> IdentifierRef:
        """The reference of an `identifier` row (or of a row about to be inserted)."""
        return cls(str(row["value"]), str(row["type"]), str(row["authority_key"]))


@dataclass(frozen=True, slots=True)
class StatedIns:
    """An INS matricule as PID-3 or MRG-1 states it, not yet checked."""

    value: str
    oid: str
    namespace: str = ""


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


TextField = str | None | _Keep


@dataclass(frozen=True, slots=True)
class PatientIdentity:
    """What one PID segment (with its ZFD) says of a patient, before any rule is applied.

    Each demographic field is a value, None (explicit HL7 null: clear it) or KEEP (empty).
    """

    identifiers: tuple[Identifier, ...]  # PID-3 without the INS
    ins: tuple[StatedIns, ...] = ()  # the INS matricules of PID-3, as sent
    ins_cleared: bool = False  # PID-3 holds `""` under an INS authority (§4.4.3)
    status_codes: tuple[str, ...] | None = None  # PID-32 codes; None: the field is empty
    birth_name: TextField = KEEP
    first_given_name: TextField = KEEP
    birth_given_names: tuple[str, ...] | None | _Keep = KEEP
    used_name: TextField = KEEP
    used_given_name: TextField = KEEP
    birth_date: BirthDate | None | _Keep = KEEP
    sex: TextField = KEEP
    birth_place_insee: TextField = KEEP
    identity_mode: TextField = KEEP  # ZFD-5: how the identity was obtained (INSI, CV, SM...)
    insi_query_date: TextField = KEEP  # ZFD-6
    identity_document: TextField = KEEP  # ZFD-7
    notes: tuple[Note, ...] = ()  # what reading the message alone found (ZFD-1 truncated...)

    @property
    def ipp(self) -> Identifier | None:
        return next((i for i in self.identifiers if i.type == IPP_TYPE), None)

    @property
    def ipps(self) -> tuple[Identifier, ...]:
        return tuple(i for i in self.identifiers if i.type == IPP_TYPE)

    def stated_values(self) -> dict[str, object]:
        """The demographic values this PID sets, in the store's terms; KEEP fields left out."""
        values: dict[str, object] = {}
        for name in DEMOGRAPHIC_FIELDS:
            value = getattr(self, name)
            if value is KEEP:
                continue
            if isinstance(value, tuple):
                value = " ".join(value)
            elif isinstance(value, BirthDate):
                value = value.iso()
            values[name] = value
        return values


# The fields of a stored identity that a PID may set, and those the rules decide.
DEMOGRAPHIC_FIELDS = (
    "birth_name",
    "first_given_name",
    "birth_given_names",
    "used_name",
    "used_given_name",
    "birth_date",
    "sex",
    "birth_place_insee",
    "identity_mode",
    "insi_query_date",
    "identity_document",
)
DECIDED_FIELDS = ("ins_value", "ins_oid", "status", "attributes", "other_status_codes")
IDENTITY_FIELDS = DEMOGRAPHIC_FIELDS + DECIDED_FIELDS

# The five INS traits (INS guide): the INS is kept only for an identity that has them all.
INS_TRAITS = ("birth_name", "first_given_name", "birth_date", "sex", "birth_place_insee")


@dataclass(frozen=True, slots=True)
class IdentityValues:
    """A patient's identity as the store keeps it: every field of IDENTITY_FIELDS, each a
    column of `patient` (the given names space separated, the birth date in ISO form)."""

    birth_name: str | None = None
    first_given_name: str | None = None
    birth_given_names: str | None = None
    used_name: str | None = None
    used_given_name: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    birth_place_insee: str | None = None
    identity_mode: str | None = None
    insi_query_date: str | None = None
    identity_document: str | None = None
    ins_value: str | None = None
    ins_oid: str | None = None
    status: str = Status.PROVISOIRE.value
    attributes: str = ""
    other_status_codes: str = ""

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> IdentityValues:
        """The values of a stored patient row (or of any mapping holding those columns)."""
        return cls(**{k: row[k] for k in IDENTITY_FIELDS})  # type: ignore[arg-type]

    def columns(self) -> dict[str, object]:
        """By column name, in the order of IDENTITY_FIELDS."""
        return {k: getattr(self, k) for k in IDENTITY_FIELDS}

    def with_values(self, values: Mapping[str, object]) -> IdentityValues:
        return replace(self, **values)  # type: ignore[arg-type]


assert tuple(f.name for f in fields(IdentityValues)) == IDENTITY_FIELDS


def empty_identity() -> IdentityValues:
    """The stored values of a patient that no message has described yet."""
    return IdentityValues()
