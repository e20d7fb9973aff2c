"""Logging set-up shared by every command.

At INFO and above, log lines carry no patient data (names, birth dates, INS): the modules
only log peers, control ids, events and outcomes. DEBUG may show identifiers.

Two formats: "text" (one readable line) and "json" (one JSON object a line, for a log
collector): the same message, plus the structured fields a module passes in `extra=`
(the per-message line gives door, peer, control_id, event, outcome, duplicate, duration_ms).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

LOG_FORMATS = ("text", "json")
# The attributes every LogRecord has: anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_format = "text"


class JsonFormatter(logging.Formatter):
    """One JSON object a record: time (UTC, ISO 8601), level, logger, message, the `extra=`
    fields, and the exception's type when there is one (its traceback only at DEBUG)."""

    def format(self, record: logging.LogRecord) -> str:
        item = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                item[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            item["exception"] = record.exc_info[0].__name__
            item["traceback"] = self.formatException(record.exc_info)
        return json.dumps(item, ensure_ascii=False, default=str)


def setup_logging(level: str = "info", fmt: str | None = None) -> None:
    """`fmt`: "text" or "json"; None keeps the format set last in this process ("text")."""
    global _format
    if fmt is not None:
        if fmt not in LOG_FORMATS:
            raise ValueError(f"unknown log format {fmt!r}")
        _format = fmt
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    if _format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Library chatter that says nothing to an operator.
    for noisy in ("alembic.runtime.plugins", "hl7apy", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def current_format() -> str:
    """The format of this process's logs, for the worker processes it starts."""
    return _format


def set_level(level: str) -> None:
    """Change the level of a running process (SIGHUP reload); handlers stay as they are."""
    logging.getLogger().setLevel(level.upper())
