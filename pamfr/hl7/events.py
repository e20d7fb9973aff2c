"""The ADT trigger events pamfr accepts (IHE PAM with the French extension) and what they do."""

from __future__ import annotations

from enum import StrEnum


class Operation(StrEnum):
    CREATE = "create"  # A28
    UPDATE = "update"  # A31, A08 and the ITI-31 events that carry a PID
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

# ITI-31 (encounters) events: their PID updates the identity like an A31.
ITI31_EVENTS = frozenset(
    (
        "A01 A02 A03 A04 A05 A06 A07 A11 A12 A13 A14 A16 A21 A22 A25 A26 A27 A38 A44 "
        "A52 A53 A54 A55 Z99"
    ).split()
)

# A08 is not used in France; tolerated from non-conformant senders, treated like A31.
TOLERATED_EVENTS = frozenset({"A08"})

SUPPORTED_EVENTS = frozenset(ITI30_EVENTS) | ITI31_EVENTS | TOLERATED_EVENTS


def operation_for(event: str) -> Operation:
    return ITI30_EVENTS.get(event, Operation.UPDATE)
