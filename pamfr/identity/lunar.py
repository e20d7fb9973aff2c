"""The birth date of a "date lunaire" (ZFD-1): a date that is not a calendar date.

PAM FR 2.11.1 sends it in ZFD-1 (day^month^year) with PID-7 empty, for people whose civil
record gives only a year, or a day or month that no calendar has (`00^00^1960`, common for
people born abroad). The birth date kept is the longest calendar prefix of it: the year, the
month when it is one, the day when that day exists in that month.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pamfr.identity.findings import Finding, Note
from pamfr.identity.model import BirthDate


@dataclass(frozen=True, slots=True)
class LunarDate:
    birth_date: BirthDate
    dropped: bool  # a day or month other than 00 that is not a calendar one was left out

    def notes(self) -> tuple[Note, ...]:
        if not self.dropped:
            return ()
        kept = "month" if self.birth_date.month else "year"
        text = f"ZFD-1 holds a day or month no calendar has: the birth date is kept to the {kept}"
        return (Note(Finding.BIRTH_DATE_TRUNCATED, text, field="birth_date"),)


def lunar_birth_date(day: int, month: int, year: int) -> LunarDate:
    """`year` must be 1 to 9999 (the caller refuses anything else); 00 is "unknown"."""
    if not 1 <= month <= 12:
        return LunarDate(BirthDate(year), dropped=month != 0 or day != 0)
    try:
        date(year, month, day)
    except ValueError:
        return LunarDate(BirthDate(year, month), dropped=day != 0)
    return LunarDate(BirthDate(year, month, day), dropped=False)
