"""What a replay reports: a result per message, the tally of a run, its summary (text and
JSON) and the progress shown while it runs."""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pamfr.ingest.expected import render_difference

POSITIVE = ("AA", "CA")
NO_ACK = "none"  # the receiver did not answer (timeout, connection lost)
NOT_SENT = "not-sent"  # an earlier message of the same file got no answer


@dataclass(frozen=True, slots=True)
class MessageResult:
    file: str
    index: int  # 1-based, within its file
    control_id: str  # as sent
    event: str
    ack_code: str  # MSA-1, or NO_ACK / NOT_SENT
    errors: tuple[str, ...] = ()  # "code location text" of each ERR segment, or the failure
    original_control_id: str | None = None  # with --rewrite-control-ids
    duplicate: bool = False

    @property
    def positive(self) -> bool:
        return self.ack_code in POSITIVE


@dataclass
class Tally:
    messages: int = 0
    duplicates: int = 0
    ack_codes: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    err_codes: Counter[str] = field(default_factory=Counter)
    not_aa: list[MessageResult] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def add(self, r: MessageResult) -> None:
        self.messages += 1
        self.duplicates += r.duplicate
        self.ack_codes[r.ack_code] += 1
        self.events[r.event or "-"] += 1
        if r.ack_code not in (NO_ACK, NOT_SENT):
            for err in r.errors:
                self.err_codes[err.split(" ", 1)[0] or "-"] += 1
        if not r.positive:
            self.not_aa.append(r)

    def merge(self, other: Tally) -> None:
        self.messages += other.messages
        self.duplicates += other.duplicates
        self.ack_codes.update(other.ack_codes)
        self.events.update(other.events)
        self.err_codes.update(other.err_codes)
        self.not_aa.extend(other.not_aa)
        self.unreadable.extend(other.unreadable)


@dataclass
class Summary:
    mode: str  # local | mllp
    target: str
    files: int
    tally: Tally
    elapsed: float
    differences: list[dict[str, Any]] | None = None  # with --expect

    @property
    def all_aa(self) -> bool:
        return not self.tally.not_aa and not self.tally.unreadable

    @property
    def rate(self) -> float:
        return self.tally.messages / self.elapsed if self.elapsed > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        t = self.tally
        out: dict[str, Any] = {
            "mode": self.mode,
            "target": self.target,
            "files": self.files,
            "messages": t.messages,
            "elapsed_s": round(self.elapsed, 3),
            "messages_per_s": round(self.rate, 1),
            "all_aa": self.all_aa,
            "duplicates": t.duplicates,
            "ack_codes": dict(t.ack_codes.most_common()),
            "events": dict(t.events.most_common()),
            "err_codes": dict(t.err_codes.most_common()),
            "not_aa": [
                {
                    "file": r.file,
                    "index": r.index,
                    "control_id": r.control_id,
                    "original_control_id": r.original_control_id,
                    "event": r.event,
                    "ack_code": r.ack_code,
                    "errors": list(r.errors),
                }
                for r in t.not_aa
            ],
            "unreadable": [{"file": f, "reason": why} for f, why in t.unreadable],
        }
        if self.differences is not None:
            out["expect"] = {"match": not self.differences, "differences": self.differences}
        return out

    def render(self) -> str:
        t = self.tally

        def counts(c: Counter[str]) -> str:
            return ", ".join(f"{k} {n}" for k, n in c.most_common()) or "-"

        lines = [
            f"replayed {t.messages} message(s) from {self.files} file(s) "
            f"{'into' if self.mode == 'local' else 'to'} {self.target} ({self.mode}) "
            f"in {self.elapsed:.1f}s: {self.rate:.1f} messages/s",
            f"ACK codes: {counts(t.ack_codes)}"
            + (f" ({t.duplicates} duplicate(s))" if t.duplicates else ""),
            f"events:    {counts(t.events)}",
            f"ERR codes: {counts(t.err_codes)}",
        ]
        for f, why in t.unreadable:
            lines.append(f"unreadable file {f}: {why}")
        if t.not_aa:
            lines.append(f"not AA ({len(t.not_aa)}):")
            for r in t.not_aa:
                was = f" (was {r.original_control_id})" if r.original_control_id else ""
                lines.append(
                    f"  {r.file} #{r.index} control_id={r.control_id or '-'}{was} "
                    f"{r.ack_code} {' | '.join(r.errors)}".rstrip()
                )
        if self.differences is not None:
            if self.differences:
                lines.append(f"expected state: {len(self.differences)} difference(s)")
                lines.extend(f"  {render_difference(d)}" for d in self.differences)
            else:
                lines.append("expected state: identical")
        return "\n".join(lines)


class Progress:
    """A tqdm bar on a terminal, else a plain line on stderr every `every` seconds."""

    def __init__(self, total: int, *, every: float = 5.0, enabled: bool = True) -> None:
        self.total = total
        self.done = 0
        self.every = every
        self.enabled = enabled
        self.started = time.perf_counter()
        self._last = self.started
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="msg", file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if self.enabled and now - self._last >= self.every:
            self._last = now
            rate = self.done / (now - self.started)
            pct = 100 * self.done / self.total if self.total else 100.0
            print(
                f"replay: {self.done}/{self.total} messages ({pct:.0f}%), {rate:.1f}/s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
