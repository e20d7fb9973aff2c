"""E5: a "date lunaire" (ZFD-1) keeps its calendar part, with its precision."""

from __future__ import annotations

import pytest

from pamfr.identity.lunar import lunar_birth_date
from pamfr.identity.model import BirthDate


@pytest.mark.parametrize(
    ("day", "month", "year", "kept", "dropped"),
    [
        (0, 0, 1960, BirthDate(1960), False),
        (0, 7, 1960, BirthDate(1960, 7), False),
        (29, 2, 1960, BirthDate(1960, 2, 29), False),
        (29, 2, 1961, BirthDate(1961, 2), True),
        (31, 4, 1960, BirthDate(1960, 4), True),
        (12, 0, 1960, BirthDate(1960), True),
        (0, 14, 1960, BirthDate(1960), True),
    ],
)
def test_e5_the_longest_calendar_prefix_is_kept(day, month, year, kept, dropped):
    got = lunar_birth_date(day, month, year)
    assert (got.birth_date, got.dropped) == (kept, dropped)
    assert [n.finding.value for n in got.notes()] == (["birth-date-truncated"] if dropped else [])
