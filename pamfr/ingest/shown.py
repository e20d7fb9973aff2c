"""File names as the file door's log lines show them: quoted, every control character escaped
(a name is chosen by whoever drops the file: a newline in it must not forge a log line)."""

from __future__ import annotations

import os


def quoted(name: str | os.PathLike[str]) -> str:
    """`name` between quotes, with control, invisible and undecodable characters escaped
    (Python's repr of the string: printable non-ASCII letters such as é stay as they are)."""
    return repr(os.fspath(name))
