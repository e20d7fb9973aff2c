"""Whether the writer of a dropped file has closed it, as one folder's inotify events tell
(pamfr/ingest/inotify.py feeds them), and the signature that says a file changed.

Per file name the events say one of: written since its writer last closed it (IN_CREATE,
IN_MODIFY); closed after its last write (IN_CLOSE_WRITE, or moved into the folder whole), with
its signature just after; a link made in the folder (a symlink, a hard link: no writer's
close follows, the polling rules apply); or nothing (no event since the watch began). The
events come in the kernel's order on watchdog's thread; the watcher reads the outcome from its
own. No process list is involved: the close of an FTP server running as another user counts.
"""

from __future__ import annotations

import enum
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass


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


def signature_of(path: str | os.PathLike[str], *, follow: bool = True) -> Signature:
    """The file's signature (of a symlink itself when it leads nowhere, or cannot be
    followed, or `follow` is False: such a file goes to error/); FileNotFoundError once gone."""
    if not follow:
        return Signature.of(os.lstat(path))
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
