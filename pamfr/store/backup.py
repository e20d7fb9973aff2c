"""A consistent copy of a live SQLite store, through SQLite's online backup API.

The copy is taken in one step under a read transaction, so it is the store as it was at
one commit, while the daemon keeps writing (WAL). PostgreSQL is backed up with pg_dump.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pamfr.store.filemodes import private_file


class BackupRefused(Exception):
    """A reason not to back up (existing target, not SQLite, no such store): one line."""


def sqlite_path(url: str) -> Path:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise BackupRefused(f"--db / database.url: not a database URL: {url!r}") from None
    if parsed.get_backend_name() != "sqlite":
        raise BackupRefused(
            f"{parsed.get_backend_name()} store: back it up with pg_dump -Fc (see the README)"
        )
    if not parsed.database or parsed.database == ":memory:":
        raise BackupRefused("an in-memory SQLite store has nothing to back up")
    return Path(parsed.database).expanduser()


def backup_sqlite(url: str, target: Path) -> int:
    """Copy the store at `url` to `target` (which must not exist); the copy's size in bytes."""
    source_path = sqlite_path(url)
    if target.exists():
        raise BackupRefused(f"{target} already exists; pamfr never overwrites a backup")
    if not source_path.is_file():
        raise BackupRefused(f"no SQLite store at {source_path}")
    try:  # the copy holds the same health data: its owner's only, before a byte is written
        private_file(target, exclusive=True)
    except FileExistsError:
        raise BackupRefused(f"{target} already exists; pamfr never overwrites a backup") from None
    except OSError as exc:
        raise BackupRefused(f"cannot write {target}: {exc.strerror or exc}") from None
    # mode=rw: never create a database by reading one.
    source = sqlite3.connect(f"{source_path.resolve().as_uri()}?mode=rw", uri=True)
    try:
        try:
            copy = sqlite3.connect(f"{target.resolve().as_uri()}?mode=rwc", uri=True)
        except sqlite3.Error as exc:
            raise BackupRefused(f"cannot write {target}: {exc}") from None
        try:
            source.backup(copy)
            (check,) = copy.execute("PRAGMA quick_check").fetchone()
        finally:
            copy.close()
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    if check != "ok":
        raise BackupRefused(f"the copy at {target} fails SQLite's quick_check: {check}")
    return target.stat().st_size
