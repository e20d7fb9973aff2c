"""Where the SQLite store is when nothing says otherwise, and how a relative path is read.

The default store is `var/pamfr.db` in pamfr's home: the source checkout pamfr runs from (what
./run.sh and ./test.sh install), else `$XDG_DATA_HOME/pamfr` (`~/.local/share/pamfr`). Never
the caller's current folder: `pamfr messages` finds the store `./run.sh` made from any folder.
A relative SQLite path written in a configuration file is read from that file's folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


def pamfr_home() -> Path:
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "pamfr" / "__init__.py").is_file():
        return checkout
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "pamfr"


def default_folder() -> Path:
    """The one folder pamfr creates for a store (mode 0700); any other must exist."""
    return pamfr_home() / "var"


def default_database_url() -> str:
    return f"sqlite:///{default_folder() / 'pamfr.db'}"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for another database, memory or a file: URI."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database:
        return None
    if database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def relative_to(url: str, folder: Path) -> str:
    """A SQLite URL whose relative path is read from `folder` (a configuration file's)."""
    path = sqlite_path(url)
    if path is None or path.is_absolute():
        return url
    parsed = make_url(url)
    return parsed.set(database=str((folder / path).resolve())).render_as_string(hide_password=False)
