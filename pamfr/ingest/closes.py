"""Whether the writer of a dropped file has closed it: inotify's IN_CLOSE_WRITE, read through
watchdog's inotify observer, one watch per inbound folder.

Per file name the events say one of: written since its writer last closed it (IN_CREATE,
IN_MODIFY); closed after its last write (IN_CLOSE_WRITE, or moved into the folder whole), with
its signature just after; a link made in the folder (a symlink, a hard link: no writer's
close follows, the polling rules apply); or nothing (no event since the watch began). The
events come in the kernel's order on watchdog's thread; the watcher reads the outcome from its
own. No process list is involved: the close of an FTP server running as another user counts.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import stat
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirDeletedEvent,
    EventsLostEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.utils import UnsupportedLibcError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Signature:
    """What tells that a file changed: its size and mtime (which an uploader may set back,
    MFMT), its inode (another file renamed over it) and its ctime (moved on by every write,
    rename or attribute change, and set by no one by hand; reading it does not)."""

    size: int
    mtime_ns: int
    ino: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Signature:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def signature_of(path: str | os.PathLike[str]) -> Signature:
    """The file's signature (of a symlink itself when it leads nowhere, or cannot be
    followed: such a file fails to read and goes to error/); FileNotFoundError once gone."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not os.path.islink(path):
            raise
        st = os.lstat(path)
    except OSError:
        st = os.lstat(path)
    return Signature.of(st)


class Close(enum.Enum):
    """What is known of the close of a file's writer; the value says it in a log line."""

    UNKNOWN = "no close-of-writer information (polling rules)"
    NO_EVENT = "inotify has reported nothing for it yet"
    OPEN = "its writer has not closed it since it last wrote"
    CLOSED = "its writer closed it after its last write"


class _Writing(enum.Enum):
    OPEN = "written since its writer last closed it"
    LINK = "a link made in the folder: no writer's close will follow"


_State = Signature | _Writing  # Signature: closed after its last write, as it was then


class WriteEvents:
    """The write and close events of one folder's files, by name (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}
        self.generation = 0  # moves on when events were lost: what is there is seen anew
        self.ended = False  # the watch stopped (its folder was removed)

    # -- fed from watchdog's thread, in the kernel's order --------------------------------

    def created(self, name: str, *, link: bool) -> None:
        """A new entry (IN_CREATE): a file its writer is writing, or a link (symbolic, or a
        hard link to a file that has another name): that one is there whole as far as this
        folder can tell, and keeps the polling rules."""
        with self._lock:
            self._states[name] = _Writing.LINK if link else _Writing.OPEN

    def written(self, name: str) -> None:
        """Written (IN_MODIFY), or truncated by path (no close will follow that one)."""
        with self._lock:
            self._states[name] = _Writing.OPEN

    def closed(self, name: str, signature: Signature | None) -> None:
        """Closed after writing (or moved in whole); signature None when gone meanwhile."""
        with self._lock:
            if signature is None:
                self._states.pop(name, None)
            else:
                self._states[name] = signature

    def attributes_changed(self, name: str, signature: Signature | None) -> None:
        """chmod or a new mtime (an FTP client's MFMT) after the close: not a write."""
        with self._lock:
            state = self._states.get(name)
            if isinstance(state, Signature) and signature and signature.size == state.size:
                self._states[name] = signature

    def moved(self, source: str, target: str, signature: Signature | None) -> None:
        """Renamed inside the folder (RNFR/RNTO): a file still written keeps waiting for its
        close, under its new name; any other is there whole."""
        with self._lock:
            state = self._states.pop(source, None)
            if isinstance(state, _Writing):
                self._states[target] = state
            elif signature is None:
                self._states.pop(target, None)
            else:
                self._states[target] = signature

    def gone(self, name: str) -> None:
        with self._lock:
            self._states.pop(name, None)

    def lost(self) -> None:
        """The kernel's queue overflowed: what was known is no longer sure."""
        with self._lock:
            self._states.clear()
            self.generation += 1

    # -- read by the watcher --------------------------------------------------------------

    def close_of(self, name: str, listed: Signature) -> Close:
        """For a file whose signature the listing found to be `listed`."""
        return self.closes_of([(name, listed)])[1][0]

    def closes_of(self, listed: Sequence[tuple[str, Signature]]) -> tuple[int, list[Close]]:
        """The generation and what is known of each listed file's writer, read together: events
        lost in between would make a file long known look like one never reported."""
        with self._lock:
            return self.generation, [_close(self._states.get(n), sig) for n, sig in listed]


def _close(state: _State | None, listed: Signature) -> Close:
    if state is None:
        return Close.NO_EVENT
    if state is _Writing.LINK:
        return Close.UNKNOWN
    return Close.CLOSED if state == listed else Close.OPEN


class EventsUnavailable(Exception):
    """No close-of-writer events for a folder: it is polled only."""


class CloseWatch:
    """One watchdog inotify observer for every inbound folder of a watcher."""

    def __init__(self) -> None:
        if not sys.platform.startswith("linux"):
            raise EventsUnavailable("inotify is Linux only")
        try:
            from watchdog.observers.inotify import InotifyObserver
        except UnsupportedLibcError as exc:
            raise EventsUnavailable(f"no inotify in this libc: {exc}") from exc
        # Full events: a file moved in from elsewhere is a move (whole), not a creation.
        self._observer = InotifyObserver(generate_full_events=True)
        self._observer.start()
        self._watches: dict[int, Any] = {}

    def watch(self, folder: Path) -> WriteEvents:
        """Start watching `folder` (where it leads when it is a symlink: inotify would watch
        the link itself); EventsUnavailable says why it cannot be."""
        events = WriteEvents()
        real = os.path.realpath(folder)
        handler = _Handler(real, events)
        kinds: list[type[FileSystemEvent]] = [
            FileCreatedEvent,
            FileModifiedEvent,
            FileClosedEvent,
            FileAttribEvent,
            FileMovedEvent,
            FileDeletedEvent,
            DirDeletedEvent,
            EventsLostEvent,
        ]
        try:
            watch = self._observer.schedule(handler, real, event_filter=kinds)
        except OSError as exc:
            raise EventsUnavailable(f"inotify cannot watch {folder}: {exc}") from exc
        self._watches[id(events)] = watch
        return events

    def unwatch(self, events: WriteEvents) -> None:
        watch = self._watches.pop(id(events), None)
        if watch is not None:
            with contextlib.suppress(KeyError):  # the watch had ended by itself
                self._observer.unschedule(watch)

    @property
    def alive(self) -> bool:
        return self._observer.is_alive()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(10)


class _Handler(FileSystemEventHandler):
    """Turns watchdog's events for one folder into WriteEvents calls."""

    def __init__(self, folder: str, events: WriteEvents) -> None:
        super().__init__()
        self.folder = folder  # absolute, no symlink: as watchdog gives the events' paths
        self.events = events

    def _name(self, path: bytes | str) -> str | None:
        """The file's name when it is directly in the folder."""
        path = os.fsdecode(path)
        if not path or os.path.dirname(os.path.abspath(path)) != self.folder:
            return None
        return os.path.basename(path)

    def _signature(self, name: str) -> Signature | None:
        try:
            return signature_of(os.path.join(self.folder, name))
        except FileNotFoundError:
            return None

    def _is_link(self, name: str) -> bool:
        try:
            st = os.lstat(os.path.join(self.folder, name))
        except FileNotFoundError:
            return False
        return stat.S_ISLNK(st.st_mode) or st.st_nlink > 1

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._record(event)
        except Exception:  # never let the observer's thread die: what is known is unsure
            log.exception("inotify event %r of %s not understood", event, self.folder)
            self.events.lost()

    def _record(self, event: FileSystemEvent) -> None:
        if isinstance(event, EventsLostEvent):
            log.warning("inotify lost events for %s: its files are looked at anew", self.folder)
            self.events.lost()
            return
        if isinstance(event, DirDeletedEvent):
            if os.path.abspath(os.fsdecode(event.src_path)) == self.folder:
                self.events.ended = True
            return
        if isinstance(event, FileMovedEvent):
            source, target = self._name(event.src_path), self._name(event.dest_path)
            if source is not None and target is not None:
                self.events.moved(source, target, self._signature(target))
            elif target is not None:
                self.events.closed(target, self._signature(target))  # moved in whole
            elif source is not None:
                self.events.gone(source)  # moved out (done/, error/, elsewhere)
            return
        name = self._name(event.src_path)
        if name is None:
            return
        if isinstance(event, FileCreatedEvent):
            self.events.created(name, link=self._is_link(name))
        elif isinstance(event, FileModifiedEvent):
            self.events.written(name)
        elif isinstance(event, FileClosedEvent):
            self.events.closed(name, self._signature(name))
        elif isinstance(event, FileAttribEvent):
            self.events.attributes_changed(name, self._signature(name))
        elif isinstance(event, FileDeletedEvent):
            self.events.gone(name)
