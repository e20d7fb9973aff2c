"""What a message changed, held until its log row exists: the history rows' content and
the patient rows a PostgreSQL batch holds back."""

from __future__ import annotations

from dataclasses import dataclass, field

from pamfr.identity.findings import Note


@dataclass(eq=False)
class NewPatient:
    """A patient row held back for a batch's flush, which gives it its id."""

    columns: dict[str, object]
    id: int | None = None


def patient_id_of(patient_id: int | NewPatient) -> int | None:
    return patient_id.id if isinstance(patient_id, NewPatient) else patient_id


@dataclass
class Change:
    """One history row to write once the message row exists."""

    patient_id: int | NewPatient
    operation: str
    changes: dict[str, list] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)  # what was dropped or kept, and why
