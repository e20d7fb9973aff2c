"""What a message changed, as the repository hands it back: one typed value, `MessageChanges`,
from which the unit of work derives the message's history rows (store/history) and its
change-feed events (store/outbox) once its log row has an id."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from pamfr.identity.findings import Note


@dataclass(eq=False)
class NewPatient:
    """A patient row a PostgreSQL batch holds back (store/sink.HeldSink): its id is known once
    the held writes are sent, before the history rows are built."""

    columns: dict[str, object]
    id: int | None = None


PatientRef = int | NewPatient


def patient_id_of(patient_id: PatientRef) -> int | None:
    return patient_id.id if isinstance(patient_id, NewPatient) else patient_id


@dataclass(frozen=True, slots=True)
class Change:
    """One history row: one patient's change in one message."""

    patient_id: PatientRef
    operation: str
    changes: Mapping[str, list]
    notes: tuple[Note, ...] = ()  # what was dropped or kept, and why


@dataclass(frozen=True, slots=True)
class NewLink:
    """An A24's patient_link row, written with its message's log row (which it cites)."""

    a_authority_key: str
    a_value: str
    b_authority_key: str
    b_value: str
    created_at: datetime

    def row(self, message_id: int) -> dict[str, object]:
        return {
            "a_authority_key": self.a_authority_key,
            "a_value": self.a_value,
            "b_authority_key": self.b_authority_key,
            "b_value": self.b_value,
            "created_at": self.created_at,
            "message_id": message_id,
        }


@dataclass(frozen=True, slots=True)
class MessageChanges:
    """Everything one message did to the identities: its history records in order, the notes
    its operation made (the warnings of its ACK among them) and the link it creates."""

    at: datetime
    records: tuple[Change, ...] = ()
    notes: tuple[Note, ...] = ()
    link: NewLink | None = None


@dataclass(frozen=True, slots=True)
class LoggedChanges:
    """A message's changes once its log row exists: what its history and events cite."""

    changes: MessageChanges
    message_id: int
    control_id: str
    event: str
