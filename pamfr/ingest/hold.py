"""The file that holds an inbound folder back: the first file in line, settled (unchanged for
the quiet period) yet not taken, and what the operator is told about it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pamfr.ingest.shown import quoted


@dataclass(slots=True)
class Hold:
    """Why the first file in line is not taken, and until when (the watcher's clock)."""

    path: Path
    why: str
    since: float
    until: float | None  # None: until its writer is done, no deadline
    then: str  # what happens at `until`
    behind: int  # files after it in line (as of the last pass)

    def held_for(self, now: float) -> float:
        return max(0.0, now - self.since)

    def warning(self, now: float) -> str:
        """The one WARNING of this hold (the names of the files behind it are not given)."""
        if self.until is None:
            when = "until that ends (no deadline)"
        else:
            at = time.time() + max(0.0, self.until - now)
            when = f"until {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(at))}, then {self.then}"
        return (
            f"file {quoted(self.path.name)} holds its folder back: {self.why}; held {when}; "
            f"{self.behind} file(s) wait behind it (binary files, files over max_file_size and "
            "links leading outside the folder go to error/ meanwhile)"
        )
