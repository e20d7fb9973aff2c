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
  [filedrop] incomplete_timeout.
Files are taken in order; the first file in line that is settled yet not taken holds the
folder back (one WARNING names it, why, until when, how many files wait; /metrics and
`pamfr status` show it). Files that can never be applied go to error/ unread as soon as they
are settled, even behind a held file: a link leading outside the folder, a file over
[filedrop] max_file_size, binary content (files.not_hl7_reason, from its first bytes). What
was learnt of a file's content is kept while its signature stays the same: an incomplete
file is not read again at every pass. A message longer than [server] max_frame_size is
answered as the MLLP door answers such a frame (AR 100, its head kept in the log).
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
from functools import partial
from pathlib import Path
from typing import Protocol

from pamfr.hl7.frame import Door, Inbound, Outcome
from pamfr.ingest.closes import Close, Signature
from pamfr.ingest.files import UnreadableFile, file_messages, incomplete_reason, not_hl7_reason
from pamfr.ingest.filing import (
    ChangedSinceSeen,
    Filed,
    ack_file_content,
    file_away,
    open_for_writing,
    put_back,
    read_head,
    read_settled,
    written_since_filed,
)
from pamfr.ingest.hold import Hold
from pamfr.ingest.inbox import Inbox
from pamfr.ingest.shown import quoted
from pamfr.ingest.watches import CloseEvents
from pamfr.settings.config import FiledropSettings
from pamfr.transport.codec import DEFAULT_MAX_FRAME_SIZE, HEAD_KEPT

log = logging.getLogger(__name__)

DOOR = Door.FILE
_MAX_BACKOFF = 60.0


class MessageHandler(Protocol):
    async def receive(self, inbound: Inbound) -> Outcome: ...


class FileDropCounters(Protocol):
    """What the file door reports (pamfr.service.metrics.Metrics implements it)."""

    def file_done(self, ok: bool) -> None: ...


class _NotCounted:
    def file_done(self, ok: bool) -> None:
        pass


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


@dataclass(frozen=True, slots=True)
class _Wait:
    """A file not taken at this pass: why, until when at most (the watcher's clock; None: no
    deadline), what happens then, and whether it holds its folder back (False: a passing
    change, looked at again at the next pass)."""

    why: str
    until: float | None = None
    then: str = ""
    hold: bool = True


class _StoreUnavailable(Exception):
    """A message could not be logged: leave the file in the inbox and try again later."""


class FileDropWatcher:
    """Watches the inbound folders (inotify close-of-writer events where the platform has them,
    and a listing every poll interval); one file at a time per folder, shared receiver for all.

    `writer_open` tells whether some process holds a file open for writing (open_for_writing
    reads /proc); a test gives one that sees nothing, as pamfr sees nothing of an FTP server
    running as another user. A message longer than `max_message_size` ([server]
    max_frame_size) is answered as an oversized MLLP frame.
    """

    def __init__(
        self,
        handler: MessageHandler,
        settings: FiledropSettings,
        dirs: Sequence[str | os.PathLike[str]] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: FileDropCounters | None = None,
        writer_open: Callable[[Path], bool] = open_for_writing,
        max_message_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self.handler = handler
        self.max_message_size = max_message_size
        self.writer_open = writer_open
        self.metrics: FileDropCounters = metrics if metrics is not None else _NotCounted()
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
                quoted(path.name),
                self.settings.incomplete_timeout,
            )
        held: tuple[Path, _Wait] | None = None
        if inbox.held is not None and inbox.held[1] is Close.OPEN:
            # (Close.NO_EVENT passes: inotify's events come within a second, else the folder
            # is polled after EVENT_GRACE.)
            path, close = inbox.held
            held = (path, _Wait(close.value, inbox.until(path, close), "the polling rules decide"))
        stopped_at = len(ready)
        for n, (path, sig) in enumerate(ready):
            if self.stopping:
                return settling
            try:
                result = await self._process(path, sig, inbox)
            except Exception as exc:  # the store or the disk failed: keep the file, retry later
                self._failed(path, inbox, exc)
                return settling + 1
            if isinstance(result, _Wait):
                settling += 1
                stopped_at = n
                if result.hold:
                    held = (path, result)
                else:
                    self._wait(path, result.why)
                break  # taken at a later pass, and the files after it after it
            self._taken(path, result, inbox, results)
        if stopped_at < len(ready):
            blocker: Path | None = ready[stopped_at][0]
            after = len(ready) - stopped_at - 1 + (inbox.after_blocker + 1 if inbox.blocker else 0)
        else:
            blocker, after = inbox.blocker, inbox.after_blocker
        if blocker is not None:
            behind = ready[stopped_at + 1 :] + inbox.behind
            after -= await self._past_the_hold(behind, inbox, results)
        self._track_hold(inbox, blocker, held, after)
        return settling

    async def _past_the_hold(
        self,
        files: list[tuple[Path, Signature]],
        inbox: Inbox,
        results: list[FileResult] | None,
    ) -> int:
        """Files that can never be applied (binary, over max_file_size, links leading outside
        the folder) apply nothing, so none waits behind a file that holds the folder back: to
        error/ at once. HL7 files keep their order. The number of files moved."""
        moved = 0
        for path, sig in files:
            if self.stopping:
                break
            try:
                result = await self._never_applied(path, sig, inbox, look=True)
            except (ChangedSinceSeen, OSError):
                continue  # changed, or unreadable: its own turn will tell
            if isinstance(result, FileResult):
                self._taken(path, result, inbox, results)
                moved += 1
        return moved

    def _taken(
        self, path: Path, result: FileResult, inbox: Inbox, results: list[FileResult] | None
    ) -> None:
        inbox.backoff = 0.0
        inbox.forget(path)
        self._waiting.pop(path, None)
        if results is not None:
            results.append(result)

    def _failed(self, path: Path, inbox: Inbox, exc: Exception) -> None:
        self.failures += 1
        inbox.backoff = min(_MAX_BACKOFF, max(inbox.backoff * 2, 1.0))
        inbox.retry_at = self.clock() + inbox.backoff
        log.error(
            "file %s left in %s, retry in %.0fs: %s",
            quoted(path.name),
            inbox.path,
            inbox.backoff,
            exc,
            exc_info=not isinstance(exc, (_StoreUnavailable, OSError)),
        )

    def _track_hold(
        self, inbox: Inbox, blocker: Path | None, held: tuple[Path, _Wait] | None, after: int
    ) -> None:
        """Keep the folder's hold: begun (one WARNING) when the first file in line is settled
        and not taken, over once that file is taken or another one is first."""
        hold = inbox.hold
        if hold is not None and hold.path != blocker:
            inbox.hold = hold = None
        if hold is not None:
            hold.behind = after
        elif held is not None and held[0] == blocker:
            path, wait = held
            now = self.clock()
            inbox.hold = Hold(path, wait.why, now, wait.until, wait.then, after)
            log.warning("%s", inbox.hold.warning(now))

    def holds(self) -> dict[str, Hold | None]:
        """The file holding each inbound folder back, by folder (as configured)."""
        return {str(inbox.path): inbox.hold for inbox in self.inboxes}

    def _wait(self, path: Path, why: str) -> None:
        if self._waiting.get(path) != why:
            log.info("file %s: not taken yet, %s", quoted(path.name), why)
        self._waiting[path] = why

    async def _never_applied(
        self, path: Path, sig: Signature, inbox: Inbox, *, look: bool
    ) -> FileResult | _Wait | None:
        """To error/ unread when the file can never be applied: a link leading outside the
        folder, a file over max_file_size, and (`look`: from its first bytes) binary content;
        None when it may be HL7."""
        if path in inbox.outside:
            why = "a symbolic link leading outside the inbound folder: not followed, nothing read"
            return await self._unreadable(path, inbox, why, sig, follow=False)
        limit = self.settings.max_file_size
        if sig.size > limit:
            why = f"{sig.size} bytes, over [filedrop] max_file_size ({limit} bytes): not read"
            return await self._unreadable(path, inbox, why, sig)
        if not look or inbox.not_binary.get(path) == sig:
            return None
        head = await asyncio.to_thread(read_head, path, sig, through=inbox.inside.get(path))
        never = not_hl7_reason(head)
        if never is not None:
            return await self._unreadable(path, inbox, never, sig)
        inbox.not_binary[path] = sig
        return None

    async def _process(self, path: Path, sig: Signature, inbox: Inbox) -> FileResult | _Wait:
        """Apply a settled file's messages and file it away; a _Wait to look at it again
        later (a writer still has it open, its content is not complete yet, or it changed)."""
        try:
            refused = await self._never_applied(path, sig, inbox, look=False)
            if refused is not None:
                return refused
            if await asyncio.to_thread(self.writer_open, path):
                return _Wait("a process has it open for writing (as /proc shows)")
            known = inbox.incomplete.get(path)
            data = b""
            if known is not None and known[0] == sig:
                reason: str | None = known[1]  # unchanged since it was read: not read again
            else:
                through = inbox.inside.get(path)
                data = await asyncio.to_thread(read_settled, path, sig, through=through)
                never = not_hl7_reason(data)
                if never is not None:
                    return await self._unreadable(path, inbox, never, sig)
                reason = incomplete_reason(data)
            if reason is not None:
                inbox.incomplete[path] = (sig, reason)
                waited = inbox.waited(path, self.clock())
                limit = self.settings.incomplete_timeout
                if waited < limit:
                    why = f"its content is incomplete, {reason} (a writer may not be done)"
                    until = self.clock() - waited + limit
                    then = "error/ unless completed ([filedrop] incomplete_timeout)"
                    return _Wait(why, until, then)
                why = f"incomplete, unchanged for {waited:.0f} s: {reason}"
                return await self._unreadable(path, inbox, why, sig)
            messages = file_messages(data)
        except ChangedSinceSeen:
            return _Wait("it changed while it was read", hold=False)
        except FileNotFoundError as exc:
            if not os.path.lexists(path):
                return _Wait("it is gone", hold=False)  # taken away by someone else
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
                    quoted(path.name),
                    len(acks),
                    len(messages),
                )
                return _Wait("stopping", hold=False)
            if len(raw) > self.max_message_size:  # answered as the MLLP door answers the frame
                inbound = Inbound(raw[:HEAD_KEPT], str(path), DOOR, size=len(raw))
            else:
                inbound = Inbound(raw, str(path), DOOR)
            outcome = await self.handler.receive(inbound)
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
            return _Wait(
                "it changed, or a process opened it for writing, while applied", hold=False
            )
        moved = filed.target
        self.metrics.file_done(ok)
        counts = " ".join(f"{code}={n}" for code, n in sorted(codes.items()))
        log.log(
            logging.INFO if ok else logging.WARNING,
            "file %s: %d message(s), %s -> %s",
            quoted(path.name),
            len(messages),
            counts,
            quoted(_shown(moved, inbox)),
        )
        return FileResult(path, moved, len(messages), dict(codes))

    async def _unreadable(
        self, path: Path, inbox: Inbox, reason: str, sig: Signature, *, follow: bool = True
    ) -> FileResult | _Wait:
        text = f"{path.name}: {reason}\n".encode(errors="surrogateescape")
        filed = await self._file_away(
            path, inbox.error_dir, ".error", text, sig, inbox, follow=follow
        )
        if filed is None:
            why = "it changed, or a process opened it for writing, since it was read"
            return _Wait(why, hold=False)
        moved = filed.target
        self.metrics.file_done(False)
        log.warning(
            "file %s: unreadable (%s) -> %s",
            quoted(path.name),
            reason,
            quoted(_shown(moved, inbox)),
        )
        return FileResult(path, moved, 0, {}, reason)

    async def _file_away(
        self,
        path: Path,
        folder: Path,
        side_name: str,
        side: bytes,
        sig: Signature,
        inbox: Inbox,
        *,
        follow: bool = True,
    ) -> Filed | None:
        """Move the file (None when it changed, or a writer has it open); one written during
        the move goes back to the inbox (None), any other is watched for a writer's late write
        for one quiet period."""
        filed = await asyncio.to_thread(
            partial(file_away, writer_open=self.writer_open, follow=follow),
            path,
            folder,
            side_name,
            side,
            sig,
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
                quoted(_shown(filed.target, inbox)),
            )
        else:
            log.error(
                "file %s: written after it was moved there (a writer had opened it before), "
                "and %s: it stays there, what was written after the move is NOT applied (copy "
                "it into the inbox under a new name: what was applied is answered as duplicates)",
                quoted(filed.target),
                why,
            )
        return back


def _shown(moved: Path, inbox: Inbox) -> Path:
    return moved.relative_to(inbox.path) if moved.is_relative_to(inbox.path) else moved
