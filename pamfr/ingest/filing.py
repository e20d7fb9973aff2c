"""Reading a settled file, and filing it away into done/ or error/ beside its .ack or .error,
never moving a file that changed since it was read or that a process holds open for writing,
and giving back to the inbox one written after its move."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pamfr.ingest.closes import Signature, signature_of


class ChangedSinceSeen(Exception):
    """The file changed while it was read: it is not complete yet."""


def read_settled(path: Path, expected: Signature, *, through: Path | None = None) -> bytes:
    """The file's bytes, provided it did not change since it was seen settled: its signature
    is checked on the open file before anything is read, and no more than its size is read.
    A symlink is never followed here (O_NOFOLLOW): the file of a link checked to lead inside
    the inbox is opened by its resolved path, `through`."""
    data = _read(path, expected, through, expected.size + 1)
    if len(data) != expected.size:
        raise ChangedSinceSeen(str(path))
    return data


def read_head(path: Path, expected: Signature, *, through: Path | None = None) -> bytes:
    """The first HEAD_SIZE bytes of the file, under the same checks as read_settled."""
    return _read(path, expected, through, HEAD_SIZE)


HEAD_SIZE = 64 * 1024


def _read(path: Path, expected: Signature, through: Path | None, most: int) -> bytes:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(through or path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link now where a file was listed: seen anew
            raise ChangedSinceSeen(str(path)) from None
        raise
    with open(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if Signature.of(st) != expected or not stat.S_ISREG(st.st_mode):
            raise ChangedSinceSeen(str(path))
        return f.read(most)


def unchanged(path: Path, expected: Signature, *, follow: bool = True) -> bool:
    """The file is still as it was read (just before it is moved away)."""
    try:
        return signature_of(path, follow=follow) == expected
    except FileNotFoundError:
        return False


def open_for_writing(path: Path) -> bool:
    """Whether a process holds the file open for writing, as /proc shows it (Linux). The
    processes of other users may be hidden from pamfr: then the quiet period and the
    completeness of the content are what protect a file being written. pamfr's own handles
    (its store, its logs) never count: pamfr writes no dropped file."""
    target = os.path.realpath(path)
    own = str(os.getpid())
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and p != own]
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


@dataclass(frozen=True, slots=True)
class Filed:
    """A file moved into done/ or error/, beside its .ack or .error."""

    source: Path  # its name in the inbox
    target: Path
    side: Path  # its .ack or .error
    read: Signature  # as it was read
    moved: Signature  # just after the move
    renamed: bool  # False: copied to another file system (a new inode), then removed
    # A symlink: moving it moved no data, a writer writes where it leads (and a relative one
    # leads elsewhere from its new place): nothing to look at after the move.
    link: bool

    @property
    def written_while_moved(self) -> bool:
        """Written between the last look before the move and the first after it (the move
        moves the ctime on, and gives a new inode when copied to another file system)."""
        before, after = self.read, self.moved
        return not self.link and (
            (before.size, before.mtime_ns) != (after.size, after.mtime_ns)
            or (self.renamed and before.ino != after.ino)
        )


def file_away(
    source: Path,
    folder: Path,
    side_name: str,
    side_content: bytes,
    expected: Signature,
    *,
    writer_open: Callable[[Path], bool],
    follow: bool = True,
) -> Filed | None:
    """Write the .ack/.error file, then move the source beside it; nothing is overwritten.
    None, and nothing moved, when just before the move the source's signature is no longer
    `expected` (the one it was read with), or a process holds it open for writing (an upload
    that began again). `follow` False: a symlink refused as such, moved without a look at
    where it leads (`expected` is the link's own signature)."""
    folder.mkdir(parents=True, exist_ok=True)
    final = free_name(folder, source.name)
    side = folder / f"{final}{side_name}"
    with open(side, "xb") as f:
        f.write(side_content)
        f.flush()
        os.fsync(f.fileno())
    if not unchanged(source, expected, follow=follow) or (follow and writer_open(source)):
        side.unlink()
        return None
    target = folder / final
    link = source.is_symlink()
    renamed = _move(source, target)
    moved = signature_of(target, follow=follow)
    return Filed(source, target, side, expected, moved, renamed, link)


def written_since_filed(filed: Filed) -> bool:
    """Whether the filed file changed since just after its move: a writer that had opened it
    before the move wrote into it."""
    if filed.link:
        return False
    try:
        return signature_of(filed.target) != filed.moved
    except FileNotFoundError:
        return False  # taken away by someone: not pamfr's any more


def put_back(filed: Filed) -> bool:
    """Move a file written after its move back to its inbox name, to be taken again (what
    was applied is answered from the log), its .ack/.error removed: they tell of a part only.
    False, and nothing moved, when a new file holds that name."""
    if os.path.lexists(filed.source):
        return False
    _move(filed.target, filed.source)
    filed.side.unlink(missing_ok=True)
    return True


def _move(source: Path, target: Path) -> bool:
    """Rename; True, unless done/ or error/ is on another file system (then copied)."""
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(source, target)
        return False
    return True


def ack_file_content(acks: Sequence[bytes]) -> bytes:
    """The ACKs one after another, in order, each followed by a newline."""
    return b"".join(ack.rstrip(b"\n") + b"\n" for ack in acks)
