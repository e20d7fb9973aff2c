"""The folded search keys of a patient row, written with the names they fold."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pamfr.identity.names import fold

# name column -> its search key column (pamfr.store.schema.patient)
KEY_OF = {
    "birth_name": "birth_name_key",
    "used_name": "used_name_key",
    "first_given_name": "first_given_key",
    "used_given_name": "used_given_key",
}


def name_keys(columns: Mapping[str, Any]) -> dict[str, str | None]:
    """The key columns of the name columns present in `columns` (a row or a change)."""
    return {KEY_OF[name]: fold(value) for name, value in columns.items() if name in KEY_OF}
