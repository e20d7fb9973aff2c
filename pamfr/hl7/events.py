"""The ADT trigger events pamfr accepts (IHE PAM with the French extension) and what they do."""

from __future__ import annotations

from enum import StrEnum


class Operation(StrEnum):
    CREATE = "create"  # A28
    UPDATE = "update"  # A31; the ITI-31 events and A08 create an unknown patient only
    MERGE = "merge"  # A40
    CHANGE_ID = "change_id"  # A47
    LINK = "link"  # A24
    UNLINK = "unlink"  # A37


ITI30_EVENTS: dict[str, Operation] = {
    "A28": Operation.CREATE,
    "A31": Operation.UPDATE,
    "A40": Operation.MERGE,
    "A47": Operation.CHANGE_ID,
    "A24": Operation.LINK,
    "A37": Operation.UNLINK,
}

# ITI-31 (encounters) events of PAM FR 2.11.1: their PID creates an unknown patient, but does
# not rewrite a known one (demographics travel in A31), unless the operator allows it.
ITI31_EVENTS = frozenset(
    (
        "A01 A02 A03 A04 A05 A06 A07 A09 A10 A11 A12 A13 A14 A15 A16 A21 A22 A25 A26 A27 "
        "A32 A33 A38 A44 A49 A52 A53 A54 A55 Z99"
    ).split()
)

# A08 is not used in France; tolerated from non-conformant senders, as an ITI-31 event.
TOLERATED_EVENTS = frozenset({"A08"})

SUPPORTED_EVENTS = frozenset(ITI30_EVENTS) | ITI31_EVENTS | TOLERATED_EVENTS


def operation_for(event: str) -> Operation:
    return ITI30_EVENTS.get(event, Operation.UPDATE)


def is_iti30(event: str) -> bool:
    """A28, A31, A40, A47, A24, A37: the events that may change an identity."""
    return event in ITI30_EVENTS
