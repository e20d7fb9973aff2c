"""Messages out of a file: one message, several in a row, an HL7 batch, or MLLP frames.

Bytes stay bytes: each message is decoded later from its own MSH-18.
"""

from __future__ import annotations

import re

from pamfr.transport.codec import DiscardedBytes, Frame, MLLPDecoder, OversizedFrame

# A file may begin with a UTF-8 byte-order mark, which is not part of its first message.
_LINE_START = re.compile(rb"(?:\A(?:\xef\xbb\xbf)?|(?<=[\r\n]))(MSH|FHS|BHS|BTS|FTS)")
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
    starts = [(m.start(1), m.group(1)) for m in _LINE_START.finditer(data)]
    messages: list[bytes] = []
    for i, (pos, kind) in enumerate(starts):
        if kind in _BATCH_SEGMENTS:
            continue
        end = starts[i + 1][0] if i + 1 < len(starts) else len(data)
        messages.append(data[pos:end].rstrip(b"\r\n\t \x00\x1a"))
    if not messages:
        raise UnreadableFile("no MSH segment found: not an HL7 v2 message file")
    return messages


def file_messages(data: bytes) -> list[bytes]:
    """The messages of a file; a file without any MSH is not an HL7 file, whatever its bytes
    (split_messages would keep random bytes that look like MLLP framing as frames)."""
    if b"MSH" not in data:
        raise UnreadableFile("no MSH segment found: not an HL7 v2 message file")
    return split_messages(data)


def _frame_messages(frame: bytes) -> list[bytes]:
    """A frame normally holds one message; a batch inside one is opened, garbage kept whole."""
    try:
        return split_messages(frame)
    except UnreadableFile:
        return [frame]


_SEGMENT = re.compile(rb"[^\r\n]+")
_BOM = b"\xef\xbb\xbf"
_FILE_STARTS = (b"MSH", b"FHS", b"BHS")
_FIRST_LINE = re.compile(rb"[^\r\n]*")
# Control bytes no HL7 text holds: all but TAB, LF, CR, the MLLP marks 0x0B and 0x1C, and 0x1A
# (an old end-of-file mark some exports leave).
_BINARY = re.compile(rb"[\x00-\x08\x0c\x0e-\x19\x1b\x1d-\x1f\x7f]")


def not_hl7_reason(data: bytes) -> str | None:
    """Why a file's content is clearly not HL7 v2, whatever is appended to it: binary
    content, that is a control byte in its first line (after an optional UTF-8 byte-order mark
    and blanks) when that line does not begin with MSH, FHS or BHS (an MLLP block's 0x0B may
    come first). Any other content may still become HL7 (a header line, as some exports write,
    may precede the first MSH): None, and the completeness rules decide."""
    line = _FIRST_LINE.match(data.removeprefix(_BOM).lstrip(b" \t\r\n")).group()
    if any(s.startswith(line.lstrip(b"\x0b")[:3]) for s in _FILE_STARTS):
        return None
    control = _BINARY.search(line)
    if control is None:
        return None
    return (
        f"not an HL7 v2 file: it begins with {line[:3]!r}, binary content "
        f"(control byte 0x{control.group()[0]:02X} in its first line)"
    )


def incomplete_reason(data: bytes) -> str | None:
    """Why a file's content may still be being written, or None when it is complete: it is
    not empty, it holds an MSH segment, its last segment ends with a terminator (CR or LF; an
    MLLP file with its end marker), and an HL7 batch has its BTS (and FTS) trailers with
    counts that match. (A complete batch of no message is complete: nothing will come.)"""
    body = data.rstrip(b"\t \x00\x1a")
    if not body.strip():
        return "the file is empty (0 bytes)" if not data else "the file is empty (blanks only)"
    if b"\x0b" in body:
        if not body.rstrip(b"\r\n").endswith(b"\x1c"):
            return "the last MLLP frame has no end marker"
        return None
    segments = [s.lstrip(_BOM + b" \t") for s in _SEGMENT.findall(body)]
    has_msh = any(s.startswith(b"MSH") for s in segments)
    if not body.endswith((b"\r", b"\n")):
        if not has_msh:
            return "no MSH segment"
        return "the last segment has no terminator (CR or LF)"
    kinds = [s[:3] for s in segments if s.strip()]
    if kinds and kinds[0] in (b"FHS", b"BHS"):
        return _batch_reason(segments)
    if not has_msh:
        return "no MSH segment"
    return None


def _batch_reason(segments: list[bytes]) -> str | None:
    file_header = segments[0].startswith(b"FHS")
    batches = messages = 0
    in_batch = False
    for segment in segments:
        kind = segment[:3]
        if kind == b"BHS":
            batches, messages, in_batch = batches + 1, 0, True
        elif kind == b"MSH":
            messages += 1
        elif kind == b"BTS":
            if not in_batch:
                return "a BTS without its BHS"
            count = _count(segment)
            if count is not None and count != messages:
                return f"BTS-1 says {count} message(s), the batch holds {messages}"
            in_batch = False
        elif kind == b"FTS":
            if in_batch:
                return "the last batch has no BTS trailer"
            count = _count(segment)
            if count is not None and count != batches:
                return f"FTS-1 says {count} batch(es), the file holds {batches}"
            return None
    if in_batch:
        return "the last batch has no BTS trailer"
    if file_header:
        return "the file has no FTS trailer"
    return None


def _count(segment: bytes) -> int | None:
    fields = segment.split(segment[3:4]) if len(segment) > 3 else []
    value = fields[1].strip() if len(fields) > 1 else b""
    return int(value) if value.isdigit() else None
