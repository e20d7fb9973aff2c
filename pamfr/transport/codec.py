"""Sans-I/O MLLP codec: fed bytes, yields events, never touches a socket.

A frame on the wire is ``0x0B payload 0x1C 0x0D``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\r"
DEFAULT_MAX_FRAME_SIZE = 1024 * 1024
HEAD_KEPT = 64 * 1024

REASON_BEFORE_START = "before start block"
REASON_ABANDONED = "frame abandoned: new start block before end block"

_CR = 0x0D
_LF = 0x0A


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete frame's payload, without the framing bytes."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class OversizedFrame:
    """A frame longer than ``max_frame_size``: only its head was kept."""

    head: bytes
    size: int


@dataclass(frozen=True, slots=True)
class DiscardedBytes:
    """Bytes that belong to no frame (``count`` includes an abandoned frame's start block)."""

    count: int
    reason: str


Event = Frame | OversizedFrame | DiscardedBytes


class _AfterEnd(Enum):
    NOTHING = auto()
    CR_OR_LF = auto()
    LF = auto()


class MLLPDecoder:
    """Incremental MLLP decoder.

    Memory is bounded by ``max(max_frame_size, HEAD_KEPT)`` payload bytes: once a frame
    grows past ``max_frame_size`` only its first ``HEAD_KEPT`` bytes are kept. Work is linear
    in the bytes fed, and so is the number of events whatever the bytes: frames abandoned one
    after the other in one feed (a run of start blocks) make a single DiscardedBytes.
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size < 0:
            raise ValueError("max_frame_size must be >= 0")
        self._max_frame_size = max_frame_size
        self._buf = bytearray()
        self._size = 0
        self._in_frame = False
        self._oversized = False
        self._after_end = _AfterEnd.NOTHING

    @property
    def in_frame(self) -> bool:
        return self._in_frame

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        if not isinstance(data, bytes):
            data = bytes(data)
        events: list[Event] = []
        pos = 0
        end_of_data = len(data)
        while pos < end_of_data:
            if self._after_end is not _AfterEnd.NOTHING:
                pos = self._swallow_line_end(data, pos)
                continue
            if not self._in_frame:
                start = data.find(START_BLOCK, pos)
                junk_end = end_of_data if start == -1 else start
                if junk_end > pos:
                    events.append(DiscardedBytes(junk_end - pos, REASON_BEFORE_START))
                if start == -1:
                    break
                self._in_frame = True
                pos = start + 1
                continue
            end = data.find(END_BLOCK, pos)
            limit = end_of_data if end == -1 else end
            # Every start block before the end block abandons the frame in hand: only the last
            # one starts a frame, and all the abandoned ones are reported as one event (a run of
            # start blocks costs one search, not one loop turn and one event per byte).
            restart = data.rfind(START_BLOCK, pos, limit)
            if restart != -1:
                events.append(DiscardedBytes(1 + self._size + restart - pos, REASON_ABANDONED))
                self._reset_frame()
                self._in_frame = True
                pos = restart + 1
                continue
            if end == -1:
                self._add_payload(data, pos, end_of_data)
                break
            events.append(self._finish_frame(data, pos, end))
            pos = end + 1
        return events

    def _swallow_line_end(self, data: bytes, pos: int) -> int:
        byte = data[pos]
        state = self._after_end
        self._after_end = _AfterEnd.NOTHING
        if state is _AfterEnd.CR_OR_LF and byte == _CR:
            self._after_end = _AfterEnd.LF
            return pos + 1
        if byte == _LF:
            return pos + 1
        return pos

    def _add_payload(self, data: bytes, start: int, stop: int) -> None:
        length = stop - start
        if length <= 0:
            return
        if not self._oversized and self._size + length > self._max_frame_size:
            self._oversized = True
            del self._buf[HEAD_KEPT:]
        if self._oversized:
            room = HEAD_KEPT - len(self._buf)
            if room > 0:
                self._buf += data[start : start + min(room, length)]
        else:
            self._buf += data[start:stop]
        self._size += length

    def _finish_frame(self, data: bytes, start: int, end: int) -> Frame | OversizedFrame:
        event: Frame | OversizedFrame
        if self._size == 0 and end - start <= self._max_frame_size:
            event = Frame(data[start:end])
        else:
            self._add_payload(data, start, end)
            if self._oversized:
                event = OversizedFrame(head=bytes(self._buf), size=self._size)
            else:
                event = Frame(bytes(self._buf))
        self._reset_frame()
        self._after_end = _AfterEnd.CR_OR_LF
        return event

    def _reset_frame(self) -> None:
        self._buf = bytearray()
        self._size = 0
        self._in_frame = False
        self._oversized = False


def encode_frame(payload: bytes) -> bytes:
    return START_BLOCK + payload + END_BLOCK + CARRIAGE_RETURN
