"""A second, deliberately naive reading of an MLLP byte stream, all at once (no chunks, no
state machine): what the codec must find, however the stream is cut, and what a server must
answer (one ACK per complete frame, oversized ones included)."""

from __future__ import annotations

from dataclasses import dataclass

from pamfr.transport.codec import HEAD_KEPT

VT, FS = 0x0B, 0x1C


@dataclass(frozen=True)
class Expected:
    frames: list[tuple[bytes, int]]  # (payload or head of an oversized frame, real size)
    discarded: int  # bytes in no frame (abandoned frames count their start block)
    pending: int | None  # payload bytes of a frame still open at the end, None if none


def read_stream(stream: bytes, max_frame_size: int) -> Expected:
    frames: list[tuple[bytes, int]] = []
    discarded = 0
    i, n = 0, len(stream)
    while i < n:
        start = stream.find(VT, i)
        if start == -1:
            discarded += n - i
            return Expected(frames, discarded, None)
        discarded += start - i
        end = stream.find(FS, start + 1)
        restart = stream.find(VT, start + 1)
        if restart != -1 and (end == -1 or restart < end):
            discarded += restart - start  # the abandoned start block and its payload
            i = restart
            continue
        if end == -1:
            return Expected(frames, discarded, n - start - 1)
        payload = stream[start + 1 : end]
        frames.append(
            (payload if len(payload) <= max_frame_size else payload[:HEAD_KEPT], len(payload))
        )
        i = end + 1
        if stream.startswith(b"\r\n", i):  # one line end after the end block is part of it
            i += 2
        elif stream.startswith((b"\r", b"\n"), i):
            i += 1
    return Expected(frames, discarded, None)
