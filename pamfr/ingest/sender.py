"""Sending messages to an MLLP receiver and reading its ACKs (`pamfr send`, `replay --to`)."""

from __future__ import annotations

import ssl as ssl_module

from pamfr.transport.client import MLLPClient

_SEGMENT_SEP = ("\r\n", "\n")


def ack_summary(ack: bytes) -> tuple[str, list[str]]:
    """MSA-1 and the ERR texts (code, location, text) of an ACK."""
    text = ack.decode("utf-8", errors="replace")
    for sep in _SEGMENT_SEP:
        text = text.replace(sep, "\r")
    code, errors = "", []
    for segment in text.split("\r"):
        fields = segment.split("|")
        if fields[0] == "MSA" and len(fields) > 1:
            code = fields[1]
        elif fields[0] == "ERR":
            location = fields[2] if len(fields) > 2 else ""
            err_code = fields[3].split("^")[0] if len(fields) > 3 else ""
            message = fields[8] if len(fields) > 8 else ""
            errors.append(f"{err_code} {location} {message}".strip())
    return code, errors


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
    async with await MLLPClient.connect(host, port, timeout=timeout, ssl=ssl) as client:
        for message in messages:
            acks.append(await client.send(to_cr_segments(message), timeout=timeout))
    return acks
