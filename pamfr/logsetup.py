"""Logging set-up shared by every command.

At INFO and above, log lines carry no patient data (names, birth dates, INS): the modules
only log peers, control ids, events and outcomes. DEBUG may show identifiers.
"""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "info") -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Library chatter that says nothing to an operator.
    for noisy in ("alembic.runtime.plugins", "hl7apy", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def set_level(level: str) -> None:
    """Change the level of a running process (SIGHUP reload); handlers stay as they are."""
    logging.getLogger().setLevel(level.upper())
