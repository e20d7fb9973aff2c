"""What a message changed of a patient, as its history row says it: `{field: [old, new]}`,
the form identity/changefeed reads the events from. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping


def created(columns: Mapping[str, object]) -> dict[str, list]:
    """A new patient: each value it was given (None, "" and False left out), and active."""
    changes = {k: [None, v] for k, v in columns.items() if v not in (None, "", False)}
    changes["active"] = [None, True]
    return changes


def changed(before: Mapping[str, object], after: Mapping[str, object]) -> dict[str, list]:
    """The fields of `after` whose value differs from `before`'s."""
    return {k: [before[k], v] for k, v in after.items() if before[k] != v}
