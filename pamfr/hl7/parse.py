"""One decoded ER7 message -> a typed AdtMessage, with hl7apy as the parser of record.

Only the fields the identity rules read (PID-3, 5, 7, 8, 11, 32, MRG-1, ZFD-1/5/6/7) go through
hl7apy, one repetition at a time: MSH is read by the light tokenizer (er7.py), and the other
fields and segments (PV1, ZBE, ZFA...) are kept in the raw message but not interpreted, which
also keeps hl7apy from silently dropping Z segments. A whole PID costs hl7apy about twice its
read fields, and a whole A01 four times.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_field

from pamfr.hl7 import hl7apy_tuning
from pamfr.hl7.charset import UnknownCharset, codec_for
from pamfr.hl7.er7 import Header, split_segments, unescape
from pamfr.hl7.errors import MessageRejected, Problem
from pamfr.hl7.events import SUPPORTED_EVENTS, Operation, is_iti30, operation_for
from pamfr.hl7.problems import refusal_problem
from pamfr.identity.findings import IdentityRefused, Note
from pamfr.identity.identifiers import sort_identifiers
from pamfr.identity.lunar import lunar_birth_date
from pamfr.identity.model import (
    KEEP,
    BirthDate,
    Identifier,
    PatientIdentity,
    StatedIns,
    TextField,
    _Keep,
)
from pamfr.identity.rules import check_link, check_statement

hl7apy_tuning.install()

HL7_NULL = '""'
MAX_REPETITIONS = 50  # of one read field (PID-3, PID-5, PID-11, PID-32, MRG-1)
ACCEPTED_SEXES = {"F", "M", "U"}
MAPPED_SEXES = {"O": "U", "A": "U"}
_INSEE = re.compile(r"^(?:[0-9]{5}|2[AB][0-9]{3})$")
# HL7 TS: YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]; a time only after a full date.
_DATE = re.compile(
    r"^([0-9]{4})(?:([0-9]{2})(?:([0-9]{2})"
    r"(?:[0-9]{2}(?:[0-9]{2}(?:[0-9]{2}(?:\.[0-9]{1,4})?)?)?)?)?)?(?:[+-][0-9]{4})?$"
)


@dataclass(frozen=True, slots=True)
class AdtMessage:
    header: Header
    operation: Operation
    patients: tuple[PatientIdentity, ...]  # one; two for A24 / A37
    prior_identifiers: tuple[Identifier, ...] = ()  # MRG-1 of A40 / A47 (IPPs)
    prior_ins: tuple[StatedIns, ...] = ()  # MRG-1 of an A47 that changes the INS (§4.4)
    warnings: tuple[Problem, ...] = ()

    @property
    def production(self) -> bool:
        return self.header.processing_id == "P"


def check_header(header: Header, accepted_processing_ids: Iterable[str] = ("P", "D", "T")) -> None:
    """Reject (AR) what is wrong in MSH itself: type, event, processing id, version."""
    if header.message_type != "ADT":
        raise MessageRejected(
            Problem(200, "MSH^1^9^1^1", f"message type {header.message_type!r} is not ADT"), "AR"
        )
    if header.event not in SUPPORTED_EVENTS:
        raise MessageRejected(
            Problem(201, "MSH^1^9^1^2", f"ADT event {header.event!r} is not supported"), "AR"
        )
    if header.processing_id not in set(accepted_processing_ids):
        raise MessageRejected(
            Problem(202, "MSH^1^11", f"processing id {header.processing_id!r} is not accepted"),
            "AR",
        )
    if not header.version_id.startswith("2."):
        raise MessageRejected(
            Problem(203, "MSH^1^12", f"version {header.version_id!r} is not HL7 v2.x"), "AR"
        )


DEFAULT_CHARSET = "8859/15"


def decode(raw: bytes, header: Header, default_charset: str = DEFAULT_CHARSET) -> Decoded:
    """Decode the bytes in the MSH-18 character set; AE 103 when it is unknown or wrong.

    An empty MSH-18 with 8-bit bytes (common from French GAMs) is decoded in the configured
    default character set, with a warning."""
    charset = header.charset
    warning: Problem | None = None
    if not charset.strip() and not raw.isascii():
        charset = default_charset
        warning = Problem(
            103,
            "MSH^1^18",
            f"MSH-18 is empty but the message has 8-bit bytes: decoded as {default_charset}",
            severity="W",
        )
    try:
        codec = codec_for(charset)
    except UnknownCharset as exc:
        raise MessageRejected(Problem(103, "MSH^1^18", str(exc))) from None
    if codec.startswith("iso-8859") and warning is None and _reads_as_utf8(raw):
        # Ã© for é in every name otherwise: 8-bit text in these sets is next to never valid
        # UTF-8 with multi-byte sequences, while a GAM that misdeclares its UTF-8 is common.
        warning = Problem(
            103,
            "MSH^1^18",
            f"MSH-18 says {charset} but the bytes are UTF-8: decoded as UTF-8",
            severity="W",
        )
        codec = "utf-8"
    try:
        return Decoded(raw.decode(codec), codec, warning)
    except UnicodeDecodeError as exc:
        raise MessageRejected(
            Problem(
                103,
                "MSH^1^18",
                f"bytes invalid in the declared character set {charset or 'ASCII'!r} "
                f"at offset {exc.start}",
            )
        ) from None


def _reads_as_utf8(raw: bytes) -> bool:
    """Non-ASCII bytes that are all valid UTF-8 multi-byte sequences."""
    if raw.isascii():
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    codec: str  # the Python codec of the message's characters (\Xhh\ escapes decode in it)
    warning: Problem | None = None


def _child(element, name: str):
    """An existing child by name; hl7apy's attribute access would create a missing one."""
    for child in element.children:
        if child.name == name:
            return child
    return None


class _FieldError(ValueError):
    """A field hl7apy cannot parse or whose value breaks a rule; the caller adds the place."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code


@dataclass(frozen=True, slots=True)
class _Separators:
    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str
    codec: str = "ascii"

    @classmethod
    def of(cls, header: Header, codec: str = "ascii") -> _Separators:
        c, r, e, s = header.encoding_chars
        return cls(header.field_sep, c, r, e, s, codec)

    def hl7apy(self) -> dict[str, str]:
        return {
            "FIELD": self.field,
            "COMPONENT": self.component,
            "REPETITION": self.repetition,
            "ESCAPE": self.escape,
            "SUBCOMPONENT": self.subcomponent,
            "GROUP": "\r",
            "SEGMENT": "\r",
        }

    def unescape(self, text: str) -> str:
        encoding_chars = self.component + self.repetition + self.escape + self.subcomponent
        return unescape(text, self.field, encoding_chars, self.codec)


# One repetition of one field is parsed by hl7apy and read into plain values; the results are
# memoised by text, since the same patient's PID-3, names and birth place come back in every
# event of its stay (A01, A02, Z99...). Plain tuples only: hl7apy's object graphs stay out.
_CACHE_SIZE = 4096


def _parse(name: str, text: str, seps: _Separators):
    try:
        return parse_field(
            text,
            name=name,
            version="2.5",
            encoding_chars=seps.hl7apy(),
            validation_level=VALIDATION_LEVEL.TOLERANT,
        )
    except (HL7apyException, ValueError, IndexError, KeyError) as exc:
        raise _FieldError(102, f"{name.replace('_', '-')} cannot be parsed: {exc}") from None


def _text(seps: _Separators, element, *path: int) -> str:
    """Unescaped text of a component (and subcomponent) given by 1-based positions."""
    for position in path:
        element = _child(element, f"{element.datatype}_{position}")
        if element is None:
            return ""
    if element.datatype == "FN":  # XPN-1: the surname is its first subcomponent
        element = _child(element, "FN_1")
        if element is None:
            return ""
    return seps.unescape(_er7(element)).strip()


def _er7(element) -> str:
    """The text of an element as received: hl7apy's to_er7() re-escapes the escape character
    of a sequence it does not know (\\Xhh\\ comes back as \\E\\Xhh\\E\\). A component of
    a primitive type (XPN-2, XPN-3, CX-1...) holds its value in its one child."""
    children = element.children
    for node in (element, *(children if len(children) == 1 else ())):
        raw = getattr(getattr(node, "value", None), "value", None)
        if isinstance(raw, str):
            return raw
    return element.to_er7()


def _value(seps: _Separators, element, *path: int) -> TextField:
    """A component with HL7 null semantics: KEEP when empty, None for `""`, else its text."""
    text = _text(seps, element, *path)
    if text == "":
        return KEEP
    return None if text == HL7_NULL else text


@lru_cache(maxsize=_CACHE_SIZE)
def _read_cx(name: str, rep: str, seps: _Separators) -> Identifier:
    cx = _parse(name, rep, seps)
    return Identifier(
        value=_text(seps, cx, 1),
        type=_text(seps, cx, 5).upper(),
        authority=_text(seps, cx, 4, 1),
        oid=_text(seps, cx, 4, 2),
    )


@lru_cache(maxsize=_CACHE_SIZE)
def _read_xpn(rep: str, seps: _Separators) -> tuple[str, TextField, TextField, TextField]:
    """(name type, XPN-1 surname, XPN-2, XPN-3) of one PID-5 repetition."""
    xpn = _parse("PID_5", rep, seps)
    return (
        _text(seps, xpn, 7).upper(),
        _value(seps, xpn, 1),
        _value(seps, xpn, 2),
        _value(seps, xpn, 3),
    )


@lru_cache(maxsize=_CACHE_SIZE)
def _read_xad_bdl(rep: str, seps: _Separators) -> tuple[bool, TextField]:
    """(is the birth place, XAD-9 INSEE code) of one PID-11 repetition."""
    xad = _parse("PID_11", rep, seps)
    if _text(seps, xad, 7).upper() != "BDL":
        return False, KEEP
    code = _value(seps, xad, 9)
    if isinstance(code, str):
        if not _INSEE.match(code.upper()):
            raise _FieldError(102, "birth place INSEE code (XAD-9) is not valid")
        code = code.upper()
    return True, code


@lru_cache(maxsize=_CACHE_SIZE)
def _read_simple(name: str, rep: str, seps: _Separators) -> str:
    """The unescaped text of a field without components (PID-7's first, PID-8, PID-32, ZFD)."""
    parsed = _parse(name, rep, seps)
    first = _child(parsed, f"{parsed.datatype}_1") if parsed.children else None
    if first is not None and parsed.datatype == "TS":
        return _text(seps, first)
    return _text(seps, parsed)


@lru_cache(maxsize=_CACHE_SIZE)
def _read_na(rep: str, seps: _Separators) -> tuple[str, ...]:
    """The components of a numeric array (ZFD-1, day^month^year), unescaped."""
    parsed = _parse("ZFD_1", rep, seps)
    return tuple(seps.unescape(_er7(c)).strip() for c in parsed.children)


class _Reader:
    """Reads the fields of one message's PID / MRG / ZFD into domain values."""

    def __init__(self, header: Header, codec: str = "ascii") -> None:
        self.header = header
        self.seps = _Separators.of(header, codec)
        self.warnings: list[Problem] = []

    def fields(self, segment: str) -> list[str]:
        return segment.split(self.seps.field)

    def reps(self, field: str, place: str) -> list[str]:
        reps = [r for r in field.split(self.seps.repetition) if r != ""]
        if len(reps) > MAX_REPETITIONS:
            # hl7apy costs ~1.5 ms a repetition: thousands would hold a parse worker for seconds.
            raise MessageRejected(
                Problem(102, place, f"{len(reps)} repetitions; at most {MAX_REPETITIONS} are read")
            )
        return reps

    def at(self, place: str, read, *args):
        try:
            return read(*args)
        except _FieldError as exc:
            raise MessageRejected(Problem(exc.code, place, str(exc))) from None

    def optional(self, fields: list[str], n: int, name: str, place: str) -> TextField:
        """A whole field: KEEP when empty, None for an explicit null, else its text."""
        raw = fields[n].strip() if len(fields) > n else ""
        if raw == "":
            return KEEP
        if raw == HL7_NULL:
            return None
        return self.at(f"{place}^{n}", _read_simple, name, raw, self.seps) or None

    # -- PID --------------------------------------------------------------

    def identifiers(self, field: str, name: str, place: str) -> tuple[Identifier, ...]:
        return tuple(
            self.at(place, _read_cx, name, rep, self.seps) for rep in self.reps(field, place)
        )

    def patient(self, pid: str, zfd: str | None, place: str = "PID^1") -> PatientIdentity:
        f = self.fields(pid)
        f += [""] * (33 - len(f))
        stated = sort_identifiers(self.identifiers(f[3], "PID_3", f"{place}^3"))

        identity_mode: TextField = KEEP
        insi_date: TextField = KEEP
        document: TextField = KEEP
        birth_date = self.birth_date(f[7], place)
        notes: tuple[Note, ...] = ()
        if zfd is not None:
            z = self.fields(zfd)
            # ZFD-1 `""` says there is no date lunaire, not that the birth date goes: PID-7
            # alone clears it.
            lunar = z[1].strip() if len(z) > 1 else ""
            if not isinstance(birth_date, BirthDate) and lunar not in ("", HL7_NULL):
                birth_date, notes = self.lunar_date(lunar)
            identity_mode = self.optional(z, 5, "ZFD_5", "ZFD^1")
            insi_date = self.optional(z, 6, "ZFD_6", "ZFD^1")
            document = self.optional(z, 7, "ZFD_7", "ZFD^1")

        # PID-32 empty: no change (None); `""`: the sender clears the status, which leaves
        # none (() reads as provisoire, so a stored INS goes: G2).
        status_codes: tuple[str, ...] | None = () if f[32].strip() == HL7_NULL else None
        if f[32].strip() not in ("", HL7_NULL):
            status_codes = tuple(
                self.at(f"{place}^32", _read_simple, "PID_32", rep, self.seps)
                for rep in self.reps(f[32], f"{place}^32")
            )
        return PatientIdentity(
            identifiers=stated.identifiers,
            ins=stated.ins,
            ins_cleared=stated.ins_cleared,
            status_codes=status_codes,
            birth_date=birth_date,
            sex=self.sex(f[8], place),
            birth_place_insee=self.birth_place(f[11], place),
            identity_mode=identity_mode,
            insi_query_date=insi_date,
            identity_document=document,
            notes=notes,
            **self.names(f[5], place),
        )

    def names(self, field: str, place: str) -> dict:
        """PID-5 with HL7 null semantics at the component level: an empty component keeps
        the stored value, `""` clears it; no D repetition says nothing of the used name."""
        raw = field.strip()
        if raw == "":
            return {}
        if raw == HL7_NULL:
            return dict.fromkeys(
                (
                    "birth_name",
                    "first_given_name",
                    "birth_given_names",
                    "used_name",
                    "used_given_name",
                )
            )
        by_type: dict[str, tuple] = {}
        for rep in self.reps(field, f"{place}^5"):
            read = self.at(f"{place}^5", _read_xpn, rep, self.seps)
            by_type.setdefault(read[0], read)
        birth = by_type.get("L") or by_type.get("")
        out: dict = {}
        if birth is not None:
            _, surname, given, given_list = birth
            out.update(
                birth_name=surname,
                first_given_name=given,
                birth_given_names=tuple(given_list.split())
                if isinstance(given_list, str)
                else given_list,
            )
        used = by_type.get("D")
        if used is not None:
            out.update(used_name=used[1], used_given_name=used[2])
        return {k: v for k, v in out.items() if v is not KEEP}

    def birth_date(self, field: str, place: str) -> BirthDate | None | _Keep:
        raw = field.strip()
        if raw == "":
            return KEEP
        if raw == HL7_NULL:
            return None
        text = self.at(f"{place}^7", _read_simple, "PID_7", raw, self.seps)
        match = _DATE.match(text)
        problem = Problem(102, f"{place}^7", "PID-7 is not a valid date (YYYY[MM[DD]])")
        if not match:
            raise MessageRejected(problem)
        year, month, day = (int(g) if g else None for g in match.groups())
        try:
            if month is not None:
                date(year, month, day or 1)
        except ValueError:
            raise MessageRejected(problem) from None
        return BirthDate(year, month, day if month is not None else None)

    def lunar_date(self, field: str) -> tuple[BirthDate, tuple[Note, ...]]:
        """ZFD-1, the "date lunaire" a GAM sends with PID-7 empty: its calendar part, kept
        with its precision (identity/lunar.py), and the note when a part was left out."""
        parts = self.at("ZFD^1^1", _read_na, field, self.seps)
        problem = Problem(102, "ZFD^1^1", "ZFD-1 is not a date lunaire (DD^MM^YYYY)")
        if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
            raise MessageRejected(problem)
        day, month, year = (int(p) for p in parts)
        if not 1 <= year <= 9999:
            raise MessageRejected(problem)
        lunar = lunar_birth_date(day, month, year)
        return lunar.birth_date, lunar.notes()

    def sex(self, field: str, place: str) -> TextField:
        raw = field.strip()
        if raw == "":
            return KEEP
        if raw == HL7_NULL:
            return None
        code = self.at(f"{place}^8", _read_simple, "PID_8", raw, self.seps).upper()
        if code in ACCEPTED_SEXES:
            return code
        if code in MAPPED_SEXES:
            self.warnings.append(
                Problem(103, f"{place}^8", f"PID-8 {code!r} recorded as 'U'", severity="W")
            )
            return MAPPED_SEXES[code]
        raise MessageRejected(Problem(103, f"{place}^8", "PID-8 is not F, M or U"))

    def birth_place(self, field: str, place: str) -> TextField:
        raw = field.strip()
        if raw == "":
            return KEEP
        if raw == HL7_NULL:
            return None
        for rep in self.reps(field, f"{place}^11"):
            is_bdl, code = self.at(f"{place}^11", _read_xad_bdl, rep, self.seps)
            if is_bdl:
                return code
        return KEEP

    def prior(self, mrg_text: str) -> tuple[tuple[Identifier, ...], tuple[StatedIns, ...]]:
        mrg = self.fields(mrg_text)
        mrg1 = mrg[1] if len(mrg) > 1 else ""
        stated = sort_identifiers(self.identifiers(mrg1, "MRG_1", "MRG^1^1"))
        return stated.identifiers, stated.ins


def _refused(exc: IdentityRefused) -> MessageRejected:
    return MessageRejected(refusal_problem(exc))


def parse_adt(decoded: Decoded, header: Header) -> AdtMessage:
    """Build the AdtMessage of one decoded message whose header was already checked, and
    refuse what the identity rules refuse on the message alone."""
    segments = split_segments(decoded.text)
    reader = _Reader(header, decoded.codec)
    if decoded.warning is not None:
        reader.warnings.append(decoded.warning)
    pid_texts = [s for s in segments if s.startswith("PID")]
    operation = operation_for(header.event)
    if not pid_texts:
        raise MessageRejected(Problem(100, "PID", "the message has no PID segment"))
    wanted = 2 if operation in (Operation.LINK, Operation.UNLINK) else 1
    if len(pid_texts) < wanted:
        raise MessageRejected(Problem(100, "PID^2", f"ADT^{header.event} needs two PID segments"))
    zfd = next((s for s in segments if s.startswith("ZFD")), None)
    patients = tuple(
        reader.patient(pid_texts[i], zfd if i == 0 else None, f"PID^{i + 1}") for i in range(wanted)
    )
    prior: tuple[Identifier, ...] = ()
    prior_ins: tuple[StatedIns, ...] = ()
    if operation in (Operation.MERGE, Operation.CHANGE_ID):
        mrg_text = next((s for s in segments if s.startswith("MRG")), None)
        if mrg_text is None:
            raise MessageRejected(
                Problem(100, "MRG^1^1", f"ADT^{header.event} needs an MRG segment")
            )
        prior, prior_ins = reader.prior(mrg_text)
        if operation is Operation.MERGE:
            prior_ins = ()  # an A40 merges records, found by their IPP
        if not prior and not prior_ins:
            raise MessageRejected(Problem(101, "MRG^1^1", "MRG-1 holds no IPP (CX-5 PI)"))
    needs_birth_name = operation in (Operation.CREATE, Operation.UPDATE) and is_iti30(header.event)
    try:
        for n, identity in enumerate(patients, start=1):
            check_statement(identity, needs_birth_name=needs_birth_name, patient=n)
        if wanted == 2:
            check_link(*patients)
    except IdentityRefused as exc:
        raise _refused(exc) from None
    return AdtMessage(
        header=header,
        operation=operation,
        patients=patients,
        prior_identifiers=prior,
        prior_ins=prior_ins,
        warnings=tuple(reader.warnings),
    )
