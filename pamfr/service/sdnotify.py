"""systemd's readiness protocol (Type=notify): one datagram on $NOTIFY_SOCKET.

A few lines over a unix datagram socket, as sd_notify(3) describes; no library needed.
Without NOTIFY_SOCKET (not started by systemd) nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("pamfr.service.daemon")


def notify(state: str) -> bool:
    """Send `state` ("READY=1", "STOPPING=1", ...); True when a datagram was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("could not notify systemd (%s): %s", state, exc)
        return False
    return True
