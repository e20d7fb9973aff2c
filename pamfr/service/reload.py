"""SIGHUP: read the configuration again and apply what can change while connections stay open.

Applied at once: `server.allowed_peers` (checked at each new connection; open connections are
kept), `server.allowed_senders` (checked on each message) and `log.level`. Any other key
needs a restart, [http] tokens included: a change to it is logged as a warning (the keys'
names, never their values) and not applied. A configuration that
does not load (syntax, bad CIDR...) is refused with an ERROR and the running one is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pamfr.path.receiver import Receiver
from pamfr.service.security import mllp_refusal
from pamfr.settings.config import Settings
from pamfr.settings.logsetup import set_level
from pamfr.transport.access import PeerFilter
from pamfr.transport.server import MLLPServer

log = logging.getLogger("pamfr.service.reload")

RELOADABLE = ("server.allowed_peers", "server.allowed_senders", "log.level")
# Every section is compared, so that a change that is not applied is said: [http] tokens
# above all (a token removed and SIGHUP stays valid until the restart). Only the keys'
# names are logged, never their values (tokens, secrets).
_SECTIONS = ("server", "database", "receiver", "filedrop", "log", "retention", "http", "desk")


def _flat(settings: Settings) -> dict[str, Any]:
    flat = {
        f"{section}.{key}": value
        for section in _SECTIONS
        for key, value in getattr(settings, section).model_dump().items()
    }
    flat["webhooks"] = [w.model_dump() for w in settings.webhooks]
    return flat


def _verbosity(level: str) -> int:
    return logging.getLevelName(level.upper())


class Reloader:
    def __init__(
        self,
        load: Callable[[], Settings],
        running: Settings,
        server: MLLPServer,
        receiver: Receiver,
        source: str = "",
    ) -> None:
        self._load = load
        self.running = running
        self._server = server
        self._receiver = receiver
        self._source = source or "environment and defaults"

    def reload(self) -> bool:
        """Apply the reloadable keys of the configuration as it is now; False when refused."""
        try:
            new = self._load()
        except Exception as exc:  # ConfigError, or a file that vanished or became unreadable
            log.error("configuration not reloaded, the running one is kept: %s", exc)
            return False
        # the listen address stays: an allow-list emptied on it must not open it to everyone
        kept = self.running.server.model_copy(update={"allowed_peers": new.server.allowed_peers})
        refused = mllp_refusal(kept)
        if refused:
            log.error("configuration not reloaded, the running one is kept: %s", refused)
            return False
        old_flat, new_flat = _flat(self.running), _flat(new)
        changed = [k for k in old_flat if old_flat[k] != new_flat[k]]
        applied = [k for k in changed if k in RELOADABLE]
        ignored = [k for k in changed if k not in RELOADABLE]
        if ignored:
            log.warning(
                "configuration reload: %s changed, applied at the next restart only",
                ", ".join(ignored),
            )
        server, log_section = self.running.server, self.running.log
        if "server.allowed_peers" in applied:
            self._server.peer_filter = PeerFilter.parse(new.server.allowed_peers)
            server = server.model_copy(update={"allowed_peers": new.server.allowed_peers})
        if "server.allowed_senders" in applied:
            self._receiver.allowed_senders = tuple(new.server.allowed_senders)
            server = server.model_copy(update={"allowed_senders": new.server.allowed_senders})
        self.running = self.running.model_copy(update={"server": server})
        summary = "; ".join(f"{k}: {_show(old_flat[k])} -> {_show(new_flat[k])}" for k in applied)
        line = f"configuration reloaded from {self._source}: {summary or 'nothing to apply'}"
        if "log.level" in applied:
            level = new.log.level
            louder = _verbosity(level) < _verbosity(log_section.level)
            if louder:
                set_level(level)
            log.info(line)
            if not louder:
                set_level(level)
            log_section = log_section.model_copy(update={"level": level})
            self.running = self.running.model_copy(update={"log": log_section})
        else:
            log.info(line)
        return True


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]" if value else "[] (any)"
    return str(value)
