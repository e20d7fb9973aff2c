"""From what one message changed (the repository's history records) to the feed's events.

Pure: no database, no I/O. Each record is one patient's change in one message: the operation
the repository recorded (create, update, merge, change_id, change_ins, link, unlink, collision),
its changes ``{field: [old, new]}`` and its notes. An event carries identifiers and codes
only, never a name, a birth date or an INS value: a consumer that wants the identity reads
the patient (FHIR) at the version the event names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CREATED = "patient.created"
UPDATED = "patient.updated"
STATUS_CHANGED = "patient.status-changed"
INS_ADDED = "patient.ins-added"
INS_REMOVED = "patient.ins-removed"
MERGED = "patient.merged"
IDENTIFIER_CHANGED = "patient.identifier-changed"
LINKED = "patient.linked"
UNLINKED = "patient.unlinked"
INS_COLLISION = "ins.collision"

EVENT_TYPES = (
    CREATED,
    UPDATED,
    STATUS_CHANGED,
    INS_ADDED,
    INS_REMOVED,
    MERGED,
    IDENTIFIER_CHANGED,
    LINKED,
    UNLINKED,
    INS_COLLISION,
)

# Fields that have an event of their own, or that say nothing on their own.
_OWN_EVENT = frozenset(
    {"status", "ins_value", "ins_collision", "active", "merged_into", "merged_patients"}
)
# Why an INS went away, from the history notes, the most specific first.
_REMOVAL_FINDINGS = ("ins-deleted", "ins-replaced", "ins-removed")


@dataclass(frozen=True)
class Recorded:
    """One history record: what the repository's `Change` holds, with the patient's id."""

    patient_id: int
    operation: str
    changes: Mapping[str, Sequence[Any]]
    notes: Sequence[Any] = field(default_factory=tuple)  # Note objects or {"finding": ...}


def _findings(notes: Iterable[Any]) -> list[str]:
    out = []
    for note in notes:
        finding = note.get("finding") if isinstance(note, Mapping) else note.finding
        out.append(str(getattr(finding, "value", finding)))
    return out


def _event(type_: str, patient_id: int, other: int | None = None, **detail: Any) -> dict[str, Any]:
    return {"type": type_, "patient_id": patient_id, "other_patient_id": other, "detail": detail}


def _removal_reason(findings: list[str], replaced: bool) -> str:
    for code in _REMOVAL_FINDINGS:
        if code in findings:
            return code
    return "ins-replaced" if replaced else "unspecified"


def _collision(record: Recorded, peer: int | None) -> list[dict[str, Any]]:
    change = record.changes.get("ins_collision")
    if not change:
        return []
    old, new = change[0], change[1]
    if new and not old:
        return [_event(INS_COLLISION, record.patient_id, peer, state="detected")]
    if old and not new:
        return [_event(INS_COLLISION, record.patient_id, peer, state="resolved")]
    return []


def _identifiers_changed(record: Recorded) -> list[dict[str, Any]]:
    before, after = (list(v or []) for v in record.changes["identifiers"])
    return [
        _event(
            IDENTIFIER_CHANGED,
            record.patient_id,
            old=sorted(set(before) - set(after)),
            new=sorted(set(after) - set(before)),
        )
    ]


def _merge(record: Recorded) -> list[dict[str, Any]]:
    changes = record.changes
    out: list[dict[str, Any]] = []
    merged_into = changes.get("merged_into")
    if merged_into and merged_into[1] is not None:
        survivor = merged_into[1]
        if merged_into[0] is None:  # this record merged away now
            out.append(_event(MERGED, record.patient_id, survivor, survivor=survivor))
        else:  # merged earlier into the record merged now: it follows to the new survivor
            out.append(
                _event(
                    MERGED,
                    record.patient_id,
                    survivor,
                    survivor=survivor,
                    previous_survivor=merged_into[0],
                )
            )
    if "identifiers" in changes:  # an A40 onto an unknown target renames the source
        out += _identifiers_changed(record)
    # The survivor's merged_patients: told by the source's patient.merged.
    return out


def _identity(record: Recorded) -> list[dict[str, Any]]:
    """A create, an update, an INS change (A31, A28, ITI-31, A47 on the INS)."""
    changes, pid = record.changes, record.patient_id
    if changes.get("active") == [None, True] or changes.get("active") == (None, True):
        return [_event(CREATED, pid)]
    out: list[dict[str, Any]] = []
    fields = sorted(k for k in changes if k not in _OWN_EVENT)
    ins = changes.get("ins_value")
    if ins and ins[0] != ins[1] and "ins_oid" in fields:
        fields.remove("ins_oid")  # said by the INS events
    if fields:
        out.append(_event(UPDATED, pid, fields=fields))
    status = changes.get("status")
    if status and status[0] != status[1]:
        out.append(_event(STATUS_CHANGED, pid, **{"from": status[0], "to": status[1]}))
    if ins and ins[0] != ins[1]:
        oid = changes.get("ins_oid")
        if ins[0]:
            reason = _removal_reason(_findings(record.notes), replaced=bool(ins[1]))
            out.append(_event(INS_REMOVED, pid, reason=reason))
        if ins[1]:
            out.append(_event(INS_ADDED, pid, oid=oid[1] if oid else None))
    return out


def derive(records: Sequence[Recorded]) -> list[dict[str, Any]]:
    """The events of one message, in the order of its records: dicts with type, patient_id,
    other_patient_id and detail (the caller adds the message's id, time and control id)."""
    link_ids = {
        op: [r.patient_id for r in records if r.operation == op] for op in ("link", "unlink")
    }
    # The patient the message was about: the peer of the INS collisions it caused.
    primary = next((r.patient_id for r in records if r.operation != "collision"), None)
    events: list[dict[str, Any]] = []
    for record in records:
        op = record.operation
        if op in ("link", "unlink"):
            peers = [p for p in link_ids[op] if p != record.patient_id]
            for key, change in record.changes.items():
                if not key.startswith("link:"):
                    continue
                linked = change[1] is not None
                events.append(
                    _event(
                        LINKED if linked else UNLINKED,
                        record.patient_id,
                        peers[0] if peers else None,
                        identifier=key.removeprefix("link:"),
                    )
                )
            continue
        if op == "collision":
            peer = primary if primary != record.patient_id else None
            events += _collision(record, peer)
            continue
        if op == "merge":
            events += _merge(record)
        elif op == "change_id":
            if "identifiers" in record.changes:
                events += _identifiers_changed(record)
        else:
            events += _identity(record)
        # The collision peers of this record: the other holders flagged in the message.
        holders = [r.patient_id for r in records if r.operation == "collision"]
        events += _collision(record, holders[0] if holders else None)
    return events
