"""Messages out of a file: one message, several in a row, an HL7 batch, or MLLP frames.

Bytes stay bytes: each message is decoded later from its own MSH-18.
"""

from __future__ import annotations

import re

from pamfr.transport.codec import DiscardedBytes, Frame, MLLPDecoder, OversizedFrame

_LINE_START = re.compile(rb"(?:\A|(?<=[\r\n]))(MSH|FHS|BHS|BTS|FTS)")
_BATCH_SEGMENTS = {b"FHS", b"BHS", b"BTS", b"FTS"}
MAX_MESSAGE_SIZE = 64 * 1024 * 1024


class UnreadableFile(ValueError):
    pass


def split_messages(data: bytes) -> list[bytes]:
    """The messages of a file's content, in order; UnreadableFile when none can be found."""
    if b"\x0b" in data and b"\x1c" in data:
        decoder = MLLPDecoder(max_frame_size=MAX_MESSAGE_SIZE)
        events = decoder.feed(data)
        frames = [e.payload for e in events if isinstance(e, Frame)]
        if any(isinstance(e, OversizedFrame) for e in events):
            raise UnreadableFile("an MLLP frame in the file is larger than 64 MiB")
        if frames:
            return [m for f in frames for m in _frame_messages(f)]
        if not any(isinstance(e, DiscardedBytes) for e in events):
            raise UnreadableFile("MLLP framing without any complete frame")
    starts = [(m.start(), m.group(1)) for m in _LINE_START.finditer(data)]
    messages: list[bytes] = []
    for i, (pos, kind) in enumerate(starts):
        if kind in _BATCH_SEGMENTS:
            continue
        end = starts[i + 1][0] if i + 1 < len(starts) else len(data)
        messages.append(data[pos:end].rstrip(b"\r\n\t \x00\x1a"))
    if not messages:
        raise UnreadableFile("no MSH segment found: not an HL7 v2 message file")
    return messages


def _frame_messages(frame: bytes) -> list[bytes]:
    """A frame normally holds one message; a batch inside one is opened, garbage kept whole."""
    try:
        return split_messages(frame)
    except UnreadableFile:
        return [frame]
