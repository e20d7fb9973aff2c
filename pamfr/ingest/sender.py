"""Sending messages to an MLLP receiver and reading its ACKs (`pamfr send`, `replay --to`)."""

from __future__ import annotations

import ssl as ssl_module

from pamfr.hl7.ack import ack_summary
from pamfr.transport.client import MLLPClient, MLLPError

__all__ = ["CannotConnect", "ack_summary", "send_messages", "to_cr_segments"]


class CannotConnect(Exception):
    """The receiver refused or did not take the connection: nothing was sent on it."""


def to_cr_segments(message: bytes) -> bytes:
    """HL7 ends segments with CR; files often use LF or CRLF."""
    return message.replace(b"\r\n", b"\r").replace(b"\n", b"\r")


async def send_messages(
    host: str,
    port: int,
    messages: list[bytes],
    *,
    timeout: float = 30.0,
    ssl: ssl_module.SSLContext | None = None,
) -> list[bytes]:
    """Send messages in order over one connection (TLS with `ssl`), each waiting for its ACK."""
    acks = []
    try:
        client = await MLLPClient.connect(host, port, timeout=timeout, ssl=ssl)
    except (OSError, MLLPError) as exc:
        if isinstance(exc, ConnectionRefusedError):
            reason = "connection refused (nothing listens there)"
        else:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise CannotConnect(f"cannot connect to {host}:{port}: {reason}") from None
    async with client:
        for message in messages:
            acks.append(await client.send(to_cr_segments(message), timeout=timeout))
    return acks
