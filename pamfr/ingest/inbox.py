"""One inbound folder of the file door: what is in it, what has settled (the pure settle
decision, Inbox.decide), and whether inotify's close-of-writer events are used for it."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from pamfr.ingest.closes import Close, Signature, WriteEvents
from pamfr.ingest.filing import Filed
from pamfr.ingest.hold import Hold
from pamfr.settings.config import FiledropSettings

# inotify events reach pamfr within a second (watchdog holds a move out of the folder back half
# a second to pair it): a new file without any event after this long means inotify does not
# see the writes of that folder (a network file system): it is then polled only.
EVENT_GRACE = 10.0
# Such a folder tries inotify again after this long, twice as long each time it stays silent
# (and at once when the inotify observer is started anew).
NO_EVENTS_RETRY = 600.0
_NO_EVENTS_RETRY_MAX = 6 * 3600.0


@dataclass(slots=True)
class _Seen:
    signature: Signature
    since: float  # when the listing first found it with this signature
    first: float  # when the listing first found it


class Listed(NamedTuple):
    """A file of the folder as one listing found it."""

    path: Path
    signature: Signature
    close: Close = Close.UNKNOWN


@dataclass
class Inbox:
    """One watched folder: what is in it, what has settled, where processed files go."""

    path: Path
    settings: FiledropSettings
    seen: dict[Path, _Seen] = field(default_factory=dict)
    retry_at: float = 0.0
    backoff: float = 0.0
    missing_logged: bool = False
    events: WriteEvents | None = None  # the folder's close-of-writer events; None: polled only
    no_events: str | None = None  # why it is polled only, until events_retry_at
    events_retry_at: float = 0.0
    _events_retry: float = NO_EVENTS_RETRY
    mode_logged: str | None = None
    held: tuple[Path, Close] | None = None  # the file that holds the others back, and why
    silent: Path | None = None  # a new file inotify reported nothing for, past EVENT_GRACE
    gave_up: list[Path] = field(default_factory=list)  # no longer awaiting their close (new)
    # Files moved to done/ or error/ lately, watched until then for a writer that had opened
    # them before the move.
    filed: list[tuple[Filed, float]] = field(default_factory=list)
    # Symlinks of the last listing: where those leading outside the inbox lead (refused), and
    # the resolved file of those leading inside (read through that path).
    outside: dict[Path, str] = field(default_factory=dict)
    inside: dict[Path, Path] = field(default_factory=dict)
    # Of the last decision: the first file in line not ready (it holds the others back), the
    # files ready behind it, and how many files are after it.
    blocker: Path | None = None
    behind: list[tuple[Path, Signature]] = field(default_factory=list)
    after_blocker: int = 0
    # What the watcher learnt of a file's content, kept while its signature stays the same:
    # incomplete (and why), or its first bytes not binary. An unchanged file is not read again.
    incomplete: dict[Path, tuple[Signature, str]] = field(default_factory=dict)
    not_binary: dict[Path, Signature] = field(default_factory=dict)
    hold: Hold | None = None  # the file held at the head of the line, as last logged
    _unclosed: dict[Path, Signature] = field(default_factory=dict)  # never closed, as then
    _generation: int = -1
    _before: set[str] = field(default_factory=set)  # there before the watch: polling rules

    @property
    def mode(self) -> str:
        return "inotify" if self.events is not None else "polling"

    @property
    def done_dir(self) -> Path:
        return self.path / self.settings.done_dir

    @property
    def error_dir(self) -> Path:
        return self.path / self.settings.error_dir

    def use_events(self, events: WriteEvents | None) -> None:
        """Close-of-writer events from now on (None: polling); the files there now were
        written before: the polling rules apply to them."""
        self.events = events
        self._generation = -1

    def fall_back(self, now: float, reason: str) -> None:
        """Polled only for now: inotify does not see this folder's writes (`reason`)."""
        self.use_events(None)
        self.no_events = f"{reason}; inotify is tried again in {self._events_retry:g} s"
        self.events_retry_at = now + self._events_retry
        self._events_retry = min(2 * self._events_retry, _NO_EVENTS_RETRY_MAX)

    def events_again(self, now: float) -> bool:
        """Whether a folder polled for its silence is to try inotify again now."""
        if self.no_events is None or now < self.events_retry_at:
            return False
        self.no_events = None
        return True

    def _skipped(self, name: str) -> bool:
        lowered = name.lower()
        return name.startswith(".") or any(
            lowered.endswith(s.lower()) for s in self.settings.temp_suffixes
        )

    def list_files(self) -> list[tuple[Path, Signature]]:
        """Regular files, and symlinks to them or dangling ones, that may be messages. A
        symlink that resolves outside the inbox is listed by its own signature (lstat), and
        where it leads is kept in `outside`: it is refused, never followed."""
        found = []
        self.outside, self.inside = {}, {}
        real = os.path.realpath(self.path)
        with os.scandir(self.path) as entries:
            for entry in entries:
                if self._skipped(entry.name):
                    continue
                path = Path(entry.path)
                link = entry.is_symlink()
                try:
                    if link:
                        target = os.path.realpath(entry.path)
                        if os.path.commonpath([real, target]) != real:
                            self.outside[path] = target
                            found.append((path, Signature.of(os.lstat(entry.path))))
                            continue
                        self.inside[path] = Path(target)
                    st = os.stat(entry.path)
                except FileNotFoundError:
                    if not link or path in self.outside:
                        self.outside.pop(path, None)
                        continue  # gone meanwhile
                    st = os.lstat(entry.path)  # dangling: it will fail to read, go to error/
                except OSError:
                    st = os.lstat(entry.path)
                else:
                    if not stat.S_ISREG(st.st_mode):
                        continue  # sub-folders (done/, error/), FIFOs, sockets, devices
                found.append((path, Signature.of(st)))
        return found

    def settled(self, now: float) -> tuple[list[tuple[Path, Signature]], int]:
        """The files ready to take, in processing order, and how many are still settling."""
        files = self.list_files()
        names = {path.name for path, _ in files}
        if self.events is None:
            closes = [Close.UNKNOWN] * len(files)
        else:
            generation, closes = self.events.closes_of([(p.name, sig) for p, sig in files])
            if generation != self._generation:
                self._generation = generation  # the watch began, or lost events: seen anew
                self._before = set(names)
        self._before &= names
        listed = []
        for (path, sig), close in zip(files, closes, strict=True):
            if close is Close.NO_EVENT and path.name in self._before:
                close = Close.UNKNOWN  # there before the watch began: nothing will tell its close
            listed.append(Listed(path, sig, close))
        return self.decide(listed, now)

    def decide(
        self, listed: Sequence[Listed], now: float
    ) -> tuple[list[tuple[Path, Signature]], int]:
        """Which of the files one listing found (at `now`) are ready to take, in processing
        order, and how many are still settling (no I/O). A file is ready once unchanged for
        the quiet period and, when inotify tells of its writer, closed after its last write;
        one written and never closed (a truncate by path) has the polling rules once unchanged
        for [filedrop] incomplete_timeout (`gave_up` lists it once). Order is strict: a file
        still settling holds back the files after it."""
        seen: dict[Path, _Seen] = {}
        for path, sig, _ in listed:
            before = self.seen.get(path)
            if before and before.signature == sig:
                seen[path] = before
            else:
                seen[path] = _Seen(sig, now, before.first if before else now)
        self.seen = seen
        if self.settings.order == "mtime":
            ordered = sorted(listed, key=lambda f: (f.signature.mtime_ns, f.path.name))
        else:
            ordered = sorted(listed, key=lambda f: f.path.name)
        self.held = self.silent = None
        self.gave_up = []
        closes, unclosed = {}, {}
        for path, sig, close in listed:
            if close is Close.NO_EVENT and now - seen[path].first > EVENT_GRACE:
                self.silent = path
            if close is Close.OPEN and now - seen[path].since >= self.settings.incomplete_timeout:
                close = Close.UNKNOWN
                if self._unclosed.get(path) != sig:
                    self.gave_up.append(path)
                unclosed[path] = sig
            closes[path] = close
        self._unclosed = unclosed
        ready: list[tuple[Path, Signature]] = []
        self.blocker, self.behind, self.after_blocker = None, [], 0
        for n, (path, sig, _) in enumerate(ordered):
            close = closes[path]
            quiet = now - seen[path].since >= self.settings.quiet_period
            settled = quiet and close in (Close.UNKNOWN, Close.CLOSED)
            if self.blocker is not None:
                if settled:
                    self.behind.append((path, sig))
            elif settled:
                ready.append((path, sig))
            else:
                self.blocker, self.after_blocker = path, len(ordered) - n - 1
                if quiet:
                    self.held = (path, close)
        for learnt in (self.incomplete, self.not_binary):
            for path in set(learnt) - set(seen):
                del learnt[path]
        return ready, len(listed) - len(ready)

    def until(self, path: Path, close: Close) -> float | None:
        """When a file held for its writer's close stops waiting for it (clock time)."""
        seen = self.seen.get(path)
        if seen is None or close is not Close.OPEN:
            return None
        return seen.since + self.settings.incomplete_timeout

    def waited(self, path: Path, now: float) -> float:
        """How long the file has been unchanged."""
        seen = self.seen.get(path)
        return now - seen.since if seen else 0.0

    def forget(self, path: Path) -> None:
        self.seen.pop(path, None)
        self.incomplete.pop(path, None)
        self.not_binary.pop(path, None)
        self._before.discard(path.name)
