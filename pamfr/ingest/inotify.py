"""inotify's events for the inbound folders, through watchdog's inotify observer (one watch
per folder), turned into what pamfr/ingest/closes.WriteEvents records of each file's writer."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import sys
from pathlib import Path

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
from watchdog.observers.api import ObservedWatch
from watchdog.utils import UnsupportedLibcError

from pamfr.ingest.closes import Signature, WriteEvents, signature_of

log = logging.getLogger(__name__)


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
        self._watches: dict[WriteEvents, ObservedWatch] = {}

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
        self._watches[events] = watch
        return events

    def unwatch(self, events: WriteEvents) -> None:
        watch = self._watches.pop(events, None)
        if watch is not None:
            with contextlib.suppress(KeyError):  # the watch had ended by itself
                self._observer.unschedule(watch)

    @property
    def alive(self) -> bool:
        """Its observer thread runs, and so does the emitter thread reading each folder still
        watched (the removal of a folder ends its own)."""
        if not self._observer.is_alive():
            return False
        reading = {
            emitter.watch for emitter in tuple(self._observer.emitters) if emitter.is_alive()
        }
        return all(
            watch in reading or events.ended or not os.path.isdir(watch.path)
            for events, watch in self._watches.items()
        )

    def stop(self) -> None:
        """Stop the observer and every emitter, alive or not (also one found dead)."""
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
