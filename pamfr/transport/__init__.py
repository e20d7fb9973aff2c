"""MLLP transport: bytes and frames only, no knowledge of HL7 or of the rest of pamfr."""

from pamfr.transport.client import (
    MLLPClient,
    MLLPConnectionClosed,
    MLLPError,
    MLLPFrameTooLarge,
    MLLPTimeout,
)
from pamfr.transport.codec import (
    CARRIAGE_RETURN,
    DEFAULT_MAX_FRAME_SIZE,
    END_BLOCK,
    HEAD_KEPT,
    START_BLOCK,
    DiscardedBytes,
    Event,
    Frame,
    MLLPDecoder,
    OversizedFrame,
    encode_frame,
)
from pamfr.transport.connection import MLLPConnection, Peer
from pamfr.transport.server import FrameHandler, MLLPServer, ServerLimits

__all__ = [
    "CARRIAGE_RETURN",
    "DEFAULT_MAX_FRAME_SIZE",
    "END_BLOCK",
    "HEAD_KEPT",
    "START_BLOCK",
    "DiscardedBytes",
    "Event",
    "Frame",
    "FrameHandler",
    "MLLPClient",
    "MLLPConnection",
    "MLLPConnectionClosed",
    "MLLPDecoder",
    "MLLPError",
    "MLLPFrameTooLarge",
    "MLLPServer",
    "MLLPTimeout",
    "OversizedFrame",
    "Peer",
    "ServerLimits",
    "encode_frame",
]
