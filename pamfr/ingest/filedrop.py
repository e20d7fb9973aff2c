"""The file-drop door: inbound folders watched for HL7 files, every message through the receiver.

A file is taken once it is complete and settled, and is never moved while it changes:
* where inotify works (Linux, through watchdog: pamfr/ingest/inotify.py), a file that appears
  while the folder is watched is taken only once its writer has closed it after its last write
  (IN_CLOSE_WRITE, or it was moved in whole), then stayed unchanged for the quiet period;
* a file that was already there when the watch began (or when inotify lost events), and every
  file of a folder polled only, is taken once unchanged for the quiet period;
* either way, no process may hold it open for writing as far as /proc shows (the processes of
  other users are hidden), and its content must be complete (files.incomplete_reason: not
  empty, an MSH segment, a final segment terminator, a batch with its BTS/FTS trailers and
  matching counts); an incomplete file waits, and goes to error/ only once unchanged for
  [filedrop] incomplete_timeout. Only binary content (files.not_hl7_reason) goes to error/
  at once.
Temporary suffixes and dot-files are never taken. Its messages go one by one, in order,
through the same receiver as the MLLP door, and only when all of them are committed does the
file move to done/ (all AA) or error/ (any AE/AR, or unreadable), next to its ACKs
(`<name>.ack`) or the reason it could not be read (`<name>.error`). Just before the move its
signature (size, mtime, inode, ctime) must still be the one it was read with and no process
may hold it open for writing (as /proc shows), else it stays and is taken again later; one
written after the move (by a writer hidden from /proc that had opened it before), as seen
right after it and for one quiet period, goes back to the inbox to be taken again (an ERROR
when a new file holds its name there).
A crash mid-file leaves the file in the inbox; on restart the duplicate control answers what
was already applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pamfr.hl7.frame import Door, Inbound, Outcome
from pamfr.ingest.closes import Signature
from pamfr.ingest.files import UnreadableFile, file_messages, incomplete_reason, not_hl7_reason
from pamfr.ingest.filing import (
    ChangedSinceSeen,
    Filed,
    ack_file_content,
    file_away,
    open_for_writing,
    put_back,
    read_settled,
    written_since_filed,
)
from pamfr.ingest.inbox import Inbox
from pamfr.ingest.watches import CloseEvents
from pamfr.service.config import FiledropSettings
from pamfr.service.metrics import Metrics

log = logging.getLogger(__name__)

DOOR = Door.FILE
_MAX_BACKOFF = 60.0


class MessageHandler(Protocol):
    async def receive(self, inbound: Inbound) -> Outcome: ...


@dataclass(frozen=True, slots=True)
class FileResult:
    """What became of one dropped file."""

    source: Path
    moved_to: Path
    messages: int
    codes: dict[str, int]
    error: str | None = None  # why the file could not be read at all

    @property
    def ok(self) -> bool:
        return self.error is None and set(self.codes) <= {"AA"}


class _StoreUnavailable(Exception):
    """A message could not be logged: leave the file in the inbox and try again later."""


class FileDropWatcher:
    """Watches the inbound folders (inotify close-of-writer events where the platform has them,
    and a listing every poll interval); one file at a time per folder, shared receiver for all.

    `writer_open` tells whether some process holds a file open for writing (open_for_writing
    reads /proc); a test gives one that sees nothing, as pamfr sees nothing of an FTP server
    running as another user.
    """

    def __init__(
        self,
        handler: MessageHandler,
        settings: FiledropSettings,
        dirs: Sequence[str | os.PathLike[str]] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
        writer_open: Callable[[Path], bool] = open_for_writing,
    ) -> None:
        self.handler = handler
        self.writer_open = writer_open
        self.metrics = metrics if metrics is not None else Metrics()
        self.settings = settings
        folders = settings.dirs if dirs is None else dirs
        self.inboxes = [Inbox(Path(d), settings) for d in folders]
        self.clock = clock
        self.failures = 0  # files left in their inbox because the store or the disk failed
        self._stop = asyncio.Event()
        self._waiting: dict[Path, str] = {}  # files left to finish, and why (logged once)
        self.close_events = CloseEvents(settings, self.inboxes, clock)

    def stop(self) -> None:
        """Finish the message in hand, then stop; the current file stays in its inbox."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def backlog(self) -> int:
        """Files seen in the inboxes at their last listing and not processed yet."""
        return sum(len(inbox.seen) for inbox in self.inboxes)

    async def run(self) -> None:
        """Watch until stop()."""
        await self.close_events.start()
        try:
            await asyncio.gather(*(self._watch(inbox) for inbox in self.inboxes))
        finally:
            await self.close_events.stop()

    async def run_once(self) -> list[FileResult]:
        """Take the files that settle within one quiet period from now, then return."""
        results: list[FileResult] = []
        await self.close_events.start()
        try:
            await asyncio.gather(*(self._once(inbox, results) for inbox in self.inboxes))
        finally:
            await self.close_events.stop()
        return results

    async def _watch(self, inbox: Inbox) -> None:
        while not self.stopping:
            await self._pass(inbox, None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.poll_interval)

    async def _once(self, inbox: Inbox, results: list[FileResult]) -> None:
        deadline = self.clock() + self.settings.quiet_period
        while not self.stopping:
            settling = await self._pass(inbox, results)
            remaining = deadline - self.clock()
            if settling == 0 or remaining < 0:
                break
            await asyncio.sleep(min(self.settings.poll_interval, remaining + 0.01))
        while inbox.filed and not self.stopping:  # just filed: watched for a late writer
            remaining = max(until for _, until in inbox.filed) - self.clock()
            await asyncio.sleep(min(self.settings.poll_interval, max(remaining, 0) + 0.01))
            await self._recheck_filed(inbox)

    async def _pass(self, inbox: Inbox, results: list[FileResult] | None) -> int:
        """Process the settled files of one folder; the number of files still settling."""
        await self._recheck_filed(inbox)
        now = self.clock()
        if now < inbox.retry_at:
            return 1
        await self.close_events.keep(inbox)
        try:
            ready, settling = await asyncio.to_thread(inbox.settled, now)
        except OSError as exc:
            if not inbox.missing_logged:
                log.error("cannot list inbound folder %s: %s", inbox.path, exc)
                inbox.missing_logged = True
            return 0
        inbox.missing_logged = False
        if inbox.silent is not None:
            await self.close_events.silent(inbox, inbox.silent)
            return settling  # polled from the next pass on
        for path in inbox.gave_up:
            log.warning(
                "file %s: written and not closed by its writer since, yet unchanged for %g s "
                "([filedrop] incomplete_timeout): the polling rules decide from now on (quiet "
                "period, no writer in /proc, complete content)",
                path.name,
                self.settings.incomplete_timeout,
            )
        if inbox.held is not None:
            held, close = inbox.held
            self._wait(held, close.value)
        for path, sig in ready:
            if self.stopping:
                break
            try:
                result = await self._process(path, sig, inbox)
            except Exception as exc:  # the store or the disk failed: keep the file, retry later
                self.failures += 1
                inbox.backoff = min(_MAX_BACKOFF, max(inbox.backoff * 2, 1.0))
                inbox.retry_at = self.clock() + inbox.backoff
                log.error(
                    "file %s left in %s, retry in %.0fs: %s",
                    path.name,
                    inbox.path,
                    inbox.backoff,
                    exc,
                    exc_info=not isinstance(exc, (_StoreUnavailable, OSError)),
                )
                return settling + 1
            if result is None:
                settling += 1
                break  # changed under us or stopping: look again at the next pass
            inbox.backoff = 0.0
            inbox.forget(path)
            if results is not None:
                results.append(result)
        return settling

    def _wait(self, path: Path, why: str) -> None:
        if self._waiting.get(path) != why:
            log.info("file %s: not taken yet, %s", path.name, why)
        self._waiting[path] = why

    async def _process(self, path: Path, sig: Signature, inbox: Inbox) -> FileResult | None:
        """Apply a settled file's messages and file it away; None to look at it again later
        (a writer still has it open, its content is not complete yet, or it changed)."""
        try:
            if await asyncio.to_thread(self.writer_open, path):
                self._wait(path, "a process still has it open for writing")
                return None
            data = await asyncio.to_thread(read_settled, path, sig)
            never = not_hl7_reason(data)
            if never is not None:
                self._waiting.pop(path, None)
                return await self._unreadable(path, inbox, never, sig)
            reason = incomplete_reason(data)
            if reason is not None:
                seen = inbox.seen.get(path)
                waited = self.clock() - seen.since if seen else 0.0
                if waited < self.settings.incomplete_timeout:
                    self._wait(path, f"{reason} (a writer may not be done)")
                    return None
                self._waiting.pop(path, None)
                why = f"incomplete, unchanged for {waited:.0f} s: {reason}"
                return await self._unreadable(path, inbox, why, sig)
            self._waiting.pop(path, None)
            messages = file_messages(data)
        except ChangedSinceSeen:
            return None
        except FileNotFoundError as exc:
            if not os.path.lexists(path):
                return None  # taken away by someone else
            why = f"cannot read the file: {exc.strerror}"
            return await self._unreadable(path, inbox, why, sig)
        except OSError as exc:
            return await self._unreadable(path, inbox, f"cannot read the file: {exc}", sig)
        except UnreadableFile as exc:
            return await self._unreadable(path, inbox, str(exc), sig)

        acks: list[bytes] = []
        codes: Counter[str] = Counter()
        for raw in messages:
            if self.stopping:
                log.info(
                    "file %s: stopping after %d of %d message(s), the file stays in its inbox",
                    path.name,
                    len(acks),
                    len(messages),
                )
                return None
            outcome = await self.handler.receive(Inbound(raw, str(path), DOOR))
            if outcome.message_id is None:
                raise _StoreUnavailable(outcome.error_text or "the message could not be logged")
            acks.append(outcome.ack)
            codes[outcome.code] += 1
        ok = set(codes) <= {"AA"}
        folder = inbox.done_dir if ok else inbox.error_dir
        content = ack_file_content(acks)
        filed = await self._file_away(path, folder, ".ack", content, sig, inbox)
        if filed is None:
            # Written to while it was applied: taken again later; what was applied is answered
            # from the log (same control ids), what was added is applied then.
            self._wait(path, "it changed, or a process opened it for writing, while applied")
            return None
        moved = filed.target
        self.metrics.file_done(ok)
        counts = " ".join(f"{code}={n}" for code, n in sorted(codes.items()))
        log.log(
            logging.INFO if ok else logging.WARNING,
            "file %s: %d message(s), %s -> %s",
            path.name,
            len(messages),
            counts,
            _shown(moved, inbox),
        )
        return FileResult(path, moved, len(messages), dict(codes))

    async def _unreadable(
        self, path: Path, inbox: Inbox, reason: str, sig: Signature
    ) -> FileResult | None:
        text = f"{path.name}: {reason}\n".encode()
        filed = await self._file_away(path, inbox.error_dir, ".error", text, sig, inbox)
        if filed is None:
            self._wait(path, "it changed, or a process opened it for writing, since it was read")
            return None
        moved = filed.target
        self.metrics.file_done(False)
        log.warning("file %s: unreadable (%s) -> %s", path.name, reason, _shown(moved, inbox))
        return FileResult(path, moved, 0, {}, reason)

    async def _file_away(
        self, path: Path, folder: Path, side_name: str, side: bytes, sig: Signature, inbox: Inbox
    ) -> Filed | None:
        """Move the file (None when it changed, or a writer has it open); one written during
        the move goes back to the inbox (None), any other is watched for a writer's late write
        for one quiet period."""
        filed = await asyncio.to_thread(
            file_away, path, folder, side_name, side, sig, writer_open=self.writer_open
        )
        if filed is None:
            return None
        if filed.written_while_moved and await self._give_back(filed, inbox):
            return None
        inbox.filed.append((filed, self.clock() + self.settings.quiet_period))
        return filed

    async def _recheck_filed(self, inbox: Inbox) -> None:
        now, watched = self.clock(), []
        for filed, until in inbox.filed:
            if await asyncio.to_thread(written_since_filed, filed):
                await self._give_back(filed, inbox)
            elif now < until:
                watched.append((filed, until))
        inbox.filed = watched

    async def _give_back(self, filed: Filed, inbox: Inbox) -> bool:
        """Put a file written after its move back in the inbox (loudly); False when it must
        stay where it is."""
        try:
            back = await asyncio.to_thread(put_back, filed)
            why = f"{filed.source} is another file now"
        except OSError as exc:
            back, why = False, f"it cannot be moved back to {filed.source}: {exc}"
        if back:
            log.warning(
                "file %s: written after it was moved there (a writer had opened it before): "
                "moved back to the inbox to be taken again (what was applied is answered as "
                "duplicates)",
                _shown(filed.target, inbox),
            )
        else:
            log.error(
                "file %s: written after it was moved there (a writer had opened it before), "
                "and %s: it stays there, what was written after the move is NOT applied (copy "
                "it into the inbox under a new name: what was applied is answered as duplicates)",
                filed.target,
                why,
            )
        return back


def _shown(moved: Path, inbox: Inbox) -> Path:
    return moved.relative_to(inbox.path) if moved.is_relative_to(inbox.path) else moved
