"""G7, one INS, one active patient (docs/identity-rules.md): given the active patients the
store found holding an INS, which `ins_collision` flags a message sets or clears, and the notes
that say so. Pure: the store loads the holders and writes what is decided."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pamfr.identity.findings import Finding, Note


def collision_note() -> Note:
    return Note(
        Finding.INS_COLLISION,
        "INS also held by another active patient: flagged on both, usable on neither",
    )


def collision_resolved_note() -> Note:
    return Note(Finding.INS_COLLISION_RESOLVED, "INS no longer held by another active patient")


@dataclass(frozen=True, slots=True)
class Holder:
    """An active patient holding an INS, and whether it is flagged in collision."""

    id: int
    collision: bool


@dataclass(frozen=True, slots=True)
class Flag:
    """Another patient whose flag changes, and the note its history gets."""

    id: int
    collision: bool
    note: Note


@dataclass(frozen=True, slots=True)
class CollisionPlan:
    collision: bool  # the patient's own flag after the message
    notes: tuple[Note, ...] = ()  # the patient's (the ACK's warning)
    others: tuple[Flag, ...] = ()


def plan_collision(
    patient: int | None,
    holders_of_kept: Sequence[Holder] = (),
    holders_of_released: Sequence[Holder] = (),
) -> CollisionPlan:
    """The flags after `patient` (None: not created yet) keeps an INS that `holders_of_kept`
    hold, and lets go (replaced, removed, deleted, merged away) of one that
    `holders_of_released` hold (another INS); each list may name the patient itself.

    An INS kept while another active patient holds it is in collision: both are flagged,
    and the patient gets the warning. A holder left alone with a released INS is no longer in
    collision; while two or more others hold it, they stay flagged."""
    kept = [h for h in holders_of_kept if h.id != patient]
    others = [Flag(h.id, True, collision_note()) for h in kept if not h.collision]
    remaining = [h for h in holders_of_released if h.id != patient]
    if len(remaining) == 1 and remaining[0].collision:
        others.append(Flag(remaining[0].id, False, collision_resolved_note()))
    notes = (collision_note(),) if kept else ()
    return CollisionPlan(bool(kept), notes, tuple(others))
