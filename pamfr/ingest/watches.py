"""Keeping inotify's close-of-writer events for the inbound folders of a watcher: each folder
watched when it can be (again), a watch whose observer or folder reader died stopped and
started anew, a folder whose writes inotify does not see polled for a while, and the mode of
each folder logged whenever it changes. watchdog's schedule and unschedule, and the start and
stop of its threads, run off the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from pamfr.ingest.inbox import EVENT_GRACE, Inbox
from pamfr.ingest.inotify import CloseWatch, EventsUnavailable
from pamfr.settings.config import FiledropSettings

log = logging.getLogger("pamfr.ingest.filedrop")  # the file door's one log


class CloseEvents:
    """The close-of-writer events of every inbound folder of one watcher."""

    def __init__(
        self, settings: FiledropSettings, inboxes: Sequence[Inbox], clock: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.inboxes = inboxes
        self.clock = clock
        self.close_watch: CloseWatch | None = None
        self._unavailable: str | None = None  # why no folder has close-of-writer events
        self._lock = asyncio.Lock()  # one change of the watch at a time, for all folders

    async def start(self) -> None:
        if not self.settings.close_events:
            self._unavailable = "[filedrop] close_events = false"
            return
        try:
            self.close_watch = await asyncio.to_thread(CloseWatch)
        except EventsUnavailable as exc:
            self._unavailable = str(exc)

    async def stop(self) -> None:
        async with self._lock:
            await self._stop()

    async def _stop(self) -> None:
        watch, self.close_watch = self.close_watch, None
        for inbox in self.inboxes:
            inbox.use_events(None)
        if watch is not None:
            await asyncio.to_thread(watch.stop)

    async def keep(self, inbox: Inbox) -> None:
        """Watch the folder for close-of-writer events if it can be (again), and say in which
        mode it is watched whenever that changes."""
        async with self._lock:
            await self._renew_if_dead()
            reason = await self._keep(inbox)
        self._log_mode(inbox, reason)

    async def silent(self, inbox: Inbox, path: Path) -> None:
        """inotify said nothing of a new file: it does not see that folder's writes."""
        async with self._lock:
            if self.close_watch is not None and inbox.events is not None:
                await asyncio.to_thread(self.close_watch.unwatch, inbox.events)
            inbox.fall_back(
                self.clock(),
                f"inotify reported nothing of {path.name} for {EVENT_GRACE:g} s: its writes are "
                "not seen there (a network file system?)",
            )

    async def _renew_if_dead(self) -> None:
        watch = self.close_watch
        if watch is None or watch.alive:
            return
        log.warning(
            "the inotify observer or a folder's event reader stopped: inotify started anew "
            "(the files in the inbound folders now keep the polling rules)"
        )
        await self._stop()
        for inbox in self.inboxes:
            inbox.no_events = None  # re-established: a folder polled for silence tries again
        await self.start()

    async def _keep(self, inbox: Inbox) -> str | None:
        """Why the folder is polled only, if it is."""
        watch = self.close_watch
        events = inbox.events
        if events is not None and (watch is None or events.ended):
            if watch is not None:
                await asyncio.to_thread(watch.unwatch, events)
            inbox.use_events(None)
        if inbox.events_again(self.clock()):
            log.info("file drop %s: trying inotify's close-of-writer events again", inbox.path)
        reason = inbox.no_events or self._unavailable
        if inbox.events is None and watch is not None and inbox.no_events is None:
            try:
                inbox.use_events(await asyncio.to_thread(watch.watch, inbox.path))
            except EventsUnavailable as exc:
                reason = str(exc)  # the folder may not be there yet: tried again next pass
        return reason

    def _log_mode(self, inbox: Inbox, reason: str | None) -> None:
        if inbox.events is not None:
            mode = (
                f"close-of-writer events (inotify IN_CLOSE_WRITE), and a listing every "
                f"{self.settings.poll_interval:g} s"
            )
        else:
            mode = f"polling every {self.settings.poll_interval:g} s ({reason})"
        if mode != inbox.mode_logged:
            chosen = inbox.events is not None or not self.settings.close_events
            log.log(
                logging.INFO if chosen else logging.WARNING, "file drop %s: %s", inbox.path, mode
            )
            inbox.mode_logged = mode
