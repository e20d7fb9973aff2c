"""The file-drop door: inbound folders polled for HL7 files, every message through the receiver.

A file is taken once it has stopped changing (size and mtime stable for the quiet period;
temporary suffixes and dot-files are never taken), its messages go one by one, in order,
through the same receiver as the MLLP door, and only when all of them are committed does
the file move to done/ (all AA) or error/ (any AE/AR, or unreadable), next to its ACKs
(`<name>.ack`) or the reason it could not be read (`<name>.error`). A crash mid-file leaves
the file in the inbox; on restart the duplicate control answers what was already applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import stat
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pamfr.hl7.frame import Door, Inbound, Outcome
from pamfr.ingest.files import UnreadableFile, incomplete_reason, split_messages
from pamfr.service.config import FiledropSettings
from pamfr.service.metrics import Metrics

log = logging.getLogger(__name__)

DOOR = Door.FILE
_MAX_BACKOFF = 60.0


class MessageHandler(Protocol):
    async def receive(self, inbound: Inbound) -> Outcome: ...


@dataclass(frozen=True, slots=True)
class Signature:
    size: int
    mtime_ns: int


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


class _Changed(Exception):
    """The file changed while it was read: it is not complete yet."""


class _StoreUnavailable(Exception):
    """A message could not be logged: leave the file in the inbox and try again later."""


@dataclass(slots=True)
class _Seen:
    signature: Signature
    since: float


@dataclass
class Inbox:
    """One watched folder: what is in it, what has settled, where processed files go."""

    path: Path
    settings: FiledropSettings
    seen: dict[Path, _Seen] = field(default_factory=dict)
    retry_at: float = 0.0
    backoff: float = 0.0
    missing_logged: bool = False

    @property
    def done_dir(self) -> Path:
        return self.path / self.settings.done_dir

    @property
    def error_dir(self) -> Path:
        return self.path / self.settings.error_dir

    def _skipped(self, name: str) -> bool:
        lowered = name.lower()
        return name.startswith(".") or any(
            lowered.endswith(s.lower()) for s in self.settings.temp_suffixes
        )

    def list_files(self) -> list[tuple[Path, Signature]]:
        """Regular files (and symlinks to them, or dangling ones) that may be messages."""
        found = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                if self._skipped(entry.name):
                    continue
                try:
                    st = os.stat(entry.path)
                except FileNotFoundError:
                    if not entry.is_symlink():
                        continue  # gone meanwhile
                    st = os.lstat(entry.path)  # dangling: it will fail to read, go to error/
                except OSError:
                    st = os.lstat(entry.path)
                else:
                    if not stat.S_ISREG(st.st_mode):
                        continue  # sub-folders (done/, error/), FIFOs, sockets, devices
                found.append((Path(entry.path), Signature(st.st_size, st.st_mtime_ns)))
        return found

    def settled(self, now: float) -> tuple[list[tuple[Path, Signature]], int]:
        """The files ready to take, in processing order, and how many are still settling.

        Order is strict: a file still being written holds back the files after it.
        """
        files = self.list_files()
        seen: dict[Path, _Seen] = {}
        for path, sig in files:
            before = self.seen.get(path)
            seen[path] = before if before and before.signature == sig else _Seen(sig, now)
        self.seen = seen
        if self.settings.order == "mtime":
            files.sort(key=lambda f: (f[1].mtime_ns, f[0].name))
        else:
            files.sort(key=lambda f: f[0].name)
        ready = []
        for path, sig in files:
            if now - seen[path].since < self.settings.quiet_period:
                break
            ready.append((path, sig))
        return ready, len(files) - len(ready)

    def forget(self, path: Path) -> None:
        self.seen.pop(path, None)


def file_messages(data: bytes) -> list[bytes]:
    """The messages of a file; a file without any MSH is not an HL7 file, whatever its bytes
    (split_messages would keep random bytes that look like MLLP framing as frames)."""
    if b"MSH" not in data:
        raise UnreadableFile("no MSH segment found: not an HL7 v2 message file")
    return split_messages(data)


def read_settled(path: Path, expected: Signature) -> bytes:
    """The file's bytes, provided it did not change since it was seen settled."""
    with open(path, "rb") as f:
        data = f.read()
        st = os.fstat(f.fileno())
    if Signature(st.st_size, st.st_mtime_ns) != expected or len(data) != st.st_size:
        raise _Changed(str(path))
    return data


def unchanged(path: Path, expected: Signature) -> bool:
    """The file is still as it was read (just before it is moved away)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return Signature(st.st_size, st.st_mtime_ns) == expected


def open_for_writing(path: Path) -> bool:
    """Whether a process holds the file open for writing, as /proc shows it (Linux). The
    processes of other users may be hidden from pamfr: then the quiet period and the
    completeness of the content are what protect a file being written."""
    target = os.path.realpath(path)
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return False
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") != target:
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    flags = next(
                        int(line.split()[1], 8) for line in info if line.startswith("flags:")
                    )
            except (OSError, StopIteration, ValueError):
                continue
            if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                return True
    return False


def free_name(folder: Path, name: str) -> str:
    """`name`, else `stem.1.ext`, `stem.2.ext`...: never overwrite a file or its .ack/.error."""
    stem, suffix = os.path.splitext(name)
    candidate, n = name, 0
    while any(
        (folder / f"{candidate}{extra}").exists() or (folder / f"{candidate}{extra}").is_symlink()
        for extra in ("", ".ack", ".error")
    ):
        n += 1
        candidate = f"{stem}.{n}{suffix}"
    return candidate


def file_away(source: Path, folder: Path, side_name: str, side_content: bytes) -> Path:
    """Write the .ack/.error file, then move the source beside it; nothing is overwritten."""
    folder.mkdir(parents=True, exist_ok=True)
    final = free_name(folder, source.name)
    with open(folder / f"{final}{side_name}", "xb") as f:
        f.write(side_content)
        f.flush()
        os.fsync(f.fileno())
    target = folder / final
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(source, target)  # done/ or error/ on another file system
    return target


def ack_file_content(acks: Sequence[bytes]) -> bytes:
    """The ACKs one after another, in order, each followed by a newline."""
    return b"".join(ack.rstrip(b"\n") + b"\n" for ack in acks)


class FileDropWatcher:
    """Polls the inbound folders; one file at a time per folder, shared receiver for all."""

    def __init__(
        self,
        handler: MessageHandler,
        settings: FiledropSettings,
        dirs: Sequence[str | os.PathLike[str]] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self.handler = handler
        self.metrics = metrics if metrics is not None else Metrics()
        self.settings = settings
        folders = settings.dirs if dirs is None else dirs
        self.inboxes = [Inbox(Path(d), settings) for d in folders]
        self.clock = clock
        self.failures = 0  # files left in their inbox because the store or the disk failed
        self._stop = asyncio.Event()
        self._waiting: dict[Path, str] = {}  # files left to finish, and why (logged once)

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
        await asyncio.gather(*(self._watch(inbox) for inbox in self.inboxes))

    async def run_once(self) -> list[FileResult]:
        """Take the files that settle within one quiet period from now, then return."""
        results: list[FileResult] = []
        await asyncio.gather(*(self._once(inbox, results) for inbox in self.inboxes))
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
                return
            await asyncio.sleep(min(self.settings.poll_interval, remaining + 0.01))

    async def _pass(self, inbox: Inbox, results: list[FileResult] | None) -> int:
        """Process the settled files of one folder; the number of files still settling."""
        now = self.clock()
        if now < inbox.retry_at:
            return 1
        try:
            ready, settling = await asyncio.to_thread(inbox.settled, now)
        except OSError as exc:
            if not inbox.missing_logged:
                log.error("cannot list inbound folder %s: %s", inbox.path, exc)
                inbox.missing_logged = True
            return 0
        inbox.missing_logged = False
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
            if await asyncio.to_thread(open_for_writing, path):
                self._wait(path, "a process still has it open for writing")
                return None
            data = await asyncio.to_thread(read_settled, path, sig)
            reason = incomplete_reason(data) if b"MSH" in data else None  # else not HL7
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
        except _Changed:
            return None
        except FileNotFoundError as exc:
            if not os.path.lexists(path):
                return None  # taken away by someone else
            return await self._unreadable(path, inbox, f"cannot read the file: {exc.strerror}")
        except OSError as exc:
            return await self._unreadable(path, inbox, f"cannot read the file: {exc}")
        except UnreadableFile as exc:
            return await self._unreadable(path, inbox, str(exc))

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
        if not await asyncio.to_thread(unchanged, path, sig):
            # Written to while it was applied: taken again later; what was applied is answered
            # from the log (same control ids), what was added is applied then.
            self._wait(path, "it changed while its messages were applied")
            return None
        moved = await asyncio.to_thread(file_away, path, folder, ".ack", ack_file_content(acks))
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
        self, path: Path, inbox: Inbox, reason: str, sig: Signature | None = None
    ) -> FileResult | None:
        if sig is not None and not await asyncio.to_thread(unchanged, path, sig):
            return None  # it grew meanwhile: look again
        text = f"{path.name}: {reason}\n".encode()
        moved = await asyncio.to_thread(file_away, path, inbox.error_dir, ".error", text)
        self.metrics.file_done(False)
        log.warning("file %s: unreadable (%s) -> %s", path.name, reason, _shown(moved, inbox))
        return FileResult(path, moved, 0, {}, reason)


def _shown(moved: Path, inbox: Inbox) -> Path:
    return moved.relative_to(inbox.path) if moved.is_relative_to(inbox.path) else moved
