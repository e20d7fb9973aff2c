"""Who may read pamfr's files: the store holds health data (INS, names, birth dates), so
every folder pamfr makes is 0700 and every file 0600, whatever the umask it was started with.

SQLite gives its -wal, -shm and -journal files the mode of the database file, so creating the
database file 0600 before SQLite opens it covers them too.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("pamfr.store.filemodes")

PRIVATE_UMASK = 0o077
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_umask() -> None:
    """Every file and folder created from now on by this process is its user's only."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> None:
    """Create `path` (and its missing parents) 0700; an existing folder is left as it is."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue
        os.chmod(folder, PRIVATE_DIR)  # mkdir's mode is filtered by the umask


def private_file(path: Path, *, exclusive: bool = False) -> None:
    """Create `path` empty with mode 0600 unless it exists (FileExistsError when
    `exclusive`); an existing file keeps its mode."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else 0)
    os.close(os.open(path, flags, PRIVATE_FILE))


def exposure(path: Path) -> str | None:
    """Why an existing file or folder of the store is readable by others (one line), or
    None when only its owner may use it."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    return (
        f"{path} is open to {'group and others' if mode & 0o007 else 'its group'} "
        f"(mode {mode:04o}): it holds health data, chmod {'700' if path.is_dir() else '600'} it"
    )


def warn_if_exposed(database: Path) -> list[str]:
    """A WARNING for the SQLite store, its WAL and shared memory when other users may read
    them; the lines logged."""
    found = []
    for path in [database] + [
        database.with_name(database.name + suffix) for suffix in ("-wal", "-shm", "-journal")
    ]:
        why = exposure(path) if path.exists() else None
        if why:
            log.warning("%s", why)
            found.append(why)
    return found
