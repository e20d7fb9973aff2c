"""One decoded ER7 message -> a typed AdtMessage, with hl7apy as the parser of record.

Only the segments the identity rules read (PID, MRG, ZFD) go through hl7apy: MSH is read by
the light tokenizer (er7.py) and the other segments (PV1, ZBE, ZFA...) are kept in the raw
message but not interpreted, which also keeps hl7apy from silently dropping Z segments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Segment
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_segment

from pamfr.hl7 import hl7apy_tuning
from pamfr.hl7.charset import UnknownCharset, codec_for
from pamfr.hl7.er7 import Header, keep_fields, keep_repetitions, split_segments, unescape
from pamfr.hl7.events import SUPPORTED_EVENTS, Operation, operation_for
from pamfr.identity.errors import MessageRejected, Problem
from pamfr.identity.ins import INS_OIDS, Ins, InvalidIns, check_ins
from pamfr.identity.model import (
    INS_TYPE,
    KEEP,
    BirthDate,
    Identifier,
    PatientIdentity,
    TextField,
    _Keep,
)
from pamfr.identity.status import derive_status

hl7apy_tuning.install()

HL7_NULL = '""'
ACCEPTED_SEXES = {"F", "M", "U"}
MAPPED_SEXES = {"O": "U", "A": "U"}
_INSEE = re.compile(r"^(?:[0-9]{5}|2[AB][0-9]{3})$")
# HL7 TS: YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]; a time only after a full date.
_DATE = re.compile(
    r"^([0-9]{4})(?:([0-9]{2})(?:([0-9]{2})"
    r"(?:[0-9]{2}(?:[0-9]{2}(?:[0-9]{2}(?:\.[0-9]{1,4})?)?)?)?)?)?(?:[+-][0-9]{4})?$"
)
# INS kinds in order of preference when a PID-3 carries several kinds.
_INS_PREFERENCE = list(INS_OIDS)


@dataclass(frozen=True, slots=True)
class AdtMessage:
    header: Header
    operation: Operation
    patients: tuple[PatientIdentity, ...]  # one; two for A24 / A37
    prior_identifiers: tuple[Identifier, ...] = ()  # MRG-1 of A40 / A47
    warnings: tuple[Problem, ...] = ()


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


def decode(raw: bytes, header: Header) -> str:
    """Decode the bytes in the MSH-18 character set; AE 103 when it is unknown or wrong."""
    try:
        codec = codec_for(header.charset)
    except UnknownCharset as exc:
        raise MessageRejected(Problem(103, "MSH^1^18", str(exc))) from None
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise MessageRejected(
            Problem(
                103,
                "MSH^1^18",
                f"bytes invalid in the declared character set {header.charset or 'ASCII'!r} "
                f"at offset {exc.start}",
            )
        ) from None


def _child(element, name: str):
    """An existing child by name; hl7apy's attribute access would create a missing one."""
    for child in element.children:
        if child.name == name:
            return child
    return None


class _Reader:
    """Reads hl7apy segments of one message into domain values."""

    def __init__(self, header: Header) -> None:
        self.header = header
        self.warnings: list[Problem] = []
        c, r, e, s = header.encoding_chars
        self.encoding_chars = {
            "FIELD": header.field_sep,
            "COMPONENT": c,
            "REPETITION": r,
            "ESCAPE": e,
            "SUBCOMPONENT": s,
            "GROUP": "\r",
            "SEGMENT": "\r",
        }

    def segment(self, text: str, place: str) -> Segment:
        try:
            return parse_segment(
                text,
                version="2.5",
                encoding_chars=self.encoding_chars,
                validation_level=VALIDATION_LEVEL.TOLERANT,
            )
        except (HL7apyException, ValueError, IndexError, KeyError) as exc:
            raise MessageRejected(
                Problem(102, place, f"{place.split('^')[0]} segment cannot be parsed: {exc}")
            ) from None

    @staticmethod
    def reps(segment: Segment, name: str) -> list:
        return [rep for rep in getattr(segment, name) if rep.to_er7() != ""]

    @staticmethod
    def raw(segment: Segment, name: str) -> str:
        reps = list(getattr(segment, name))
        return reps[0].to_er7() if reps else ""

    def text(self, element, *path: int) -> str:
        """Unescaped text of a component (and subcomponent) given by 1-based positions."""
        for position in path:
            element = _child(element, f"{element.datatype}_{position}")
            if element is None:
                return ""
        if element.datatype == "FN":  # XPN-1: the surname is its first subcomponent
            element = _child(element, "FN_1")
            if element is None:
                return ""
        return unescape(element.to_er7(), self.header)

    def value(self, element, *path: int) -> str | None:
        text = self.text(element, *path).strip()
        return None if text in ("", HL7_NULL) else text

    def optional(self, segment: Segment, name: str) -> TextField:
        """A whole field: KEEP when empty, None for an explicit null, else its text."""
        raw = self.raw(segment, name).strip()
        if raw == "":
            return KEEP
        return None if raw == HL7_NULL else self.value(getattr(segment, name)[0])

    # -- PID --------------------------------------------------------------

    def identifiers(self, pid: Segment, segment_name: str = "PID") -> tuple[Identifier, ...]:
        out = []
        for rep in self.reps(
            pid, f"{segment_name.lower()}_3" if segment_name == "PID" else "mrg_1"
        ):
            out.append(
                Identifier(
                    value=self.text(rep, 1).strip(),
                    type=self.text(rep, 5).strip(),
                    authority=self.text(rep, 4, 1).strip(),
                    oid=self.text(rep, 4, 2).strip(),
                )
            )
        return tuple(out)

    def patient(self, pid: Segment, zfd: Segment | None, place: str = "PID^1") -> PatientIdentity:
        identifiers = self.identifiers(pid)
        if not any(i.type == "PI" and i.value and i.value != HL7_NULL for i in identifiers):
            raise MessageRejected(Problem(101, f"{place}^3", "PID-3 holds no IPP (CX-5 PI)"))
        ins, ins_present = self.ins(identifiers, place)
        kept = tuple(i for i in identifiers if i.value and i.value != HL7_NULL)

        names = self.names(pid)
        identity_mode: TextField = KEEP
        insi_date: TextField = KEEP
        document: TextField = KEEP
        if zfd is not None:
            identity_mode = self.optional(zfd, "zfd_5")
            insi_date = self.optional(zfd, "zfd_6")
            document = self.optional(zfd, "zfd_7")

        pid32 = [code for rep in self.reps(pid, "pid_32") if (code := self.text(rep)) != HL7_NULL]
        status = derive_status(
            pid32,
            has_ins=ins_present,
            identity_mode=identity_mode if isinstance(identity_mode, str) else None,
        )
        return PatientIdentity(
            identifiers=kept,
            ins=ins,
            birth_date=self.birth_date(pid, place),
            sex=self.sex(pid, place),
            birth_place_insee=self.birth_place(pid, place),
            status=status,
            identity_mode=identity_mode,
            insi_query_date=insi_date,
            identity_document=document,
            **names,
        )

    def ins(
        self, identifiers: tuple[Identifier, ...], place: str
    ) -> tuple[Ins | None | _Keep, bool]:
        """The INS of PID-3 (KEEP when none is sent, None when sent as an explicit null)."""
        found: dict[str, Ins] = {}
        cleared = False
        for ident in identifiers:
            if ident.type != INS_TYPE:
                continue
            if ident.value == HL7_NULL:
                cleared = True
                continue
            try:
                ins = check_ins(ident.value, ident.oid)
            except InvalidIns as exc:
                raise MessageRejected(Problem(102, f"{place}^3", f"invalid INS: {exc}")) from None
            previous = found.get(ins.oid)
            if previous is not None and previous.value != ins.value:
                raise MessageRejected(
                    Problem(205, f"{place}^3", f"two different INS of kind {ins.kind} in PID-3")
                )
            found[ins.oid] = ins
        if found:
            best = min(found.values(), key=lambda i: _INS_PREFERENCE.index(i.oid))
            return best, True
        return (None if cleared else KEEP), False

    def names(self, pid: Segment) -> dict:
        raw = self.raw(pid, "pid_5")
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
        reps = self.reps(pid, "pid_5")
        by_type: dict[str, object] = {}
        for rep in reps:
            kind = self.text(rep, 7).strip().upper()
            by_type.setdefault(kind, rep)
        birth = by_type.get("L") or by_type.get("")
        out: dict = {}
        if birth is not None:
            given_list = self.value(birth, 3)
            out.update(
                birth_name=self.value(birth, 1),
                first_given_name=self.value(birth, 2),
                birth_given_names=tuple(given_list.split()) if given_list else None,
            )
        used = by_type.get("D")
        if used is not None:
            out.update(used_name=self.value(used, 1), used_given_name=self.value(used, 2))
        return out

    def birth_date(self, pid: Segment, place: str) -> BirthDate | None | _Keep:
        raw = self.raw(pid, "pid_7").strip()
        if raw == "":
            return KEEP
        if raw == HL7_NULL:
            return None
        text = raw.split(self.header.component_sep, 1)[0]
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

    def sex(self, pid: Segment, place: str) -> TextField:
        raw = self.raw(pid, "pid_8").strip()
        if raw == "":
            return KEEP
        if raw == HL7_NULL:
            return None
        code = raw.upper()
        if code in ACCEPTED_SEXES:
            return code
        if code in MAPPED_SEXES:
            self.warnings.append(
                Problem(103, f"{place}^8", f"PID-8 {code!r} recorded as 'U'", severity="W")
            )
            return MAPPED_SEXES[code]
        raise MessageRejected(Problem(103, f"{place}^8", f"PID-8 {raw!r} is not F, M or U"))

    def birth_place(self, pid: Segment, place: str) -> TextField:
        raw = self.raw(pid, "pid_11")
        if raw == "":
            return KEEP
        if raw == HL7_NULL:
            return None
        for rep in self.reps(pid, "pid_11"):
            if self.text(rep, 7).strip().upper() == "BDL":
                code = self.value(rep, 9)
                if code is not None and not _INSEE.match(code.upper()):
                    raise MessageRejected(
                        Problem(102, f"{place}^11", "birth place INSEE code (XAD-9) is not valid")
                    )
                return code.upper() if code else None
        return KEEP


# The fields the identity rules read; hl7apy is given only these (a whole PID costs twice).
PID_FIELDS_READ = frozenset({1, 3, 5, 7, 8, 11, 32})
ZFD_FIELDS_READ = frozenset({5, 6, 7})


def _pid_for_rules(pid: str, header: Header) -> str:
    """The PID with the read fields only, and in PID-11 only the birth place (BDL) address."""
    trimmed = keep_fields(pid, header, PID_FIELDS_READ)
    fields = trimmed.split(header.field_sep)
    if len(fields) > 11 and fields[11] not in ("", HL7_NULL):
        fields[11] = keep_repetitions(fields[11], header, 7, "BDL")
    return header.field_sep.join(fields)


def parse_adt(text: str, header: Header) -> AdtMessage:
    """Build the AdtMessage of one decoded message whose header was already checked."""
    segments = split_segments(text)
    reader = _Reader(header)
    pid_texts = [s for s in segments if s.startswith("PID")]
    operation = operation_for(header.event)
    if not pid_texts:
        raise MessageRejected(Problem(100, "PID", "the message has no PID segment"))
    wanted = 2 if operation in (Operation.LINK, Operation.UNLINK) else 1
    if len(pid_texts) < wanted:
        raise MessageRejected(Problem(100, "PID^2", f"ADT^{header.event} needs two PID segments"))
    zfd_text = next((s for s in segments if s.startswith("ZFD")), None)
    zfd = (
        reader.segment(keep_fields(zfd_text, header, ZFD_FIELDS_READ), "ZFD^1")
        if zfd_text
        else None
    )
    patients = tuple(
        reader.patient(
            reader.segment(_pid_for_rules(pid_texts[i], header), f"PID^{i + 1}"),
            zfd if i == 0 else None,
            f"PID^{i + 1}",
        )
        for i in range(wanted)
    )
    prior: tuple[Identifier, ...] = ()
    if operation in (Operation.MERGE, Operation.CHANGE_ID):
        mrg_text = next((s for s in segments if s.startswith("MRG")), None)
        if mrg_text is None:
            raise MessageRejected(
                Problem(100, "MRG^1^1", f"ADT^{header.event} needs an MRG segment")
            )
        mrg = reader.segment(mrg_text, "MRG^1")
        prior = tuple(i for i in reader.identifiers(mrg, "MRG") if i.value and i.value != HL7_NULL)
        if not prior:
            raise MessageRejected(Problem(101, "MRG^1^1", "MRG-1 (prior identifier) is empty"))
    return AdtMessage(
        header=header,
        operation=operation,
        patients=patients,
        prior_identifiers=prior,
        warnings=tuple(reader.warnings),
    )
