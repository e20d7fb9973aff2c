"""The CPU step of the path: bytes -> header -> sender check -> charset decode -> hl7apy
parse -> domain values. No I/O; runs in a parse worker process."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable

from pamfr.hl7.er7 import Header, read_header
from pamfr.hl7.errors import MessageRejected, Problem
from pamfr.hl7.frame import Inbound, Prepared, content_digest
from pamfr.hl7.parse import DEFAULT_CHARSET, check_header, decode, parse_adt

log = logging.getLogger(__name__)

DEFAULT_PROCESSING_IDS = ("P", "D", "T")


def sender_allowed(header: Header, patterns: Iterable[str]) -> bool:
    """Whether MSH-3/MSH-4 match one "APPLICATION|FACILITY" pattern (shell wildcards allowed;
    the namespace, first component, of each is compared). No pattern: every sender."""
    patterns = tuple(patterns)
    if not patterns:
        return True
    comp = header.component_sep
    sender = f"{header.sending_app.split(comp)[0]}|{header.sending_facility.split(comp)[0]}"
    return any(fnmatch.fnmatchcase(sender, p if "|" in p else f"{p}|*") for p in patterns)


def prepare(
    inbound: Inbound,
    processing_ids: Iterable[str] = DEFAULT_PROCESSING_IDS,
    allowed_senders: Iterable[str] = (),
    default_charset: str = DEFAULT_CHARSET,
) -> Prepared:
    header: Header | None = None
    digest = content_digest(inbound.raw)
    try:
        header = read_header(inbound.raw)
        if not sender_allowed(header, allowed_senders):
            raise MessageRejected(
                Problem(
                    207,
                    "MSH^1^3",
                    "sending application/facility (MSH-3/MSH-4) not allowed on this listener",
                ),
                "AR",
            )
        if inbound.oversized:
            raise MessageRejected(
                Problem(100, "", f"frame of {inbound.size} bytes is over the size limit"), "AR"
            )
        check_header(header, processing_ids)
        message = parse_adt(decode(inbound.raw, header, default_charset), header)
        return Prepared(inbound, header, message, "AA", message.warnings, digest)
    except MessageRejected as rejected:
        return Prepared(inbound, header, None, rejected.ack_code, tuple(rejected.problems), digest)
    except Exception as exc:  # a parser bug must not lose the frame: log it, answer AE
        # The exception's text may quote field values: the traceback only at DEBUG.
        log.error("unexpected %s while parsing a frame from %s", type(exc).__name__, inbound.peer)
        log.debug("parser failure", exc_info=True)
        problem = Problem(207, "", f"message could not be interpreted: {type(exc).__name__}")
        return Prepared(inbound, header, None, "AE", (problem,), digest)


def prepare_many(
    inbounds: list[Inbound],
    processing_ids: Iterable[str] = DEFAULT_PROCESSING_IDS,
    allowed_senders: Iterable[str] = (),
    default_charset: str = DEFAULT_CHARSET,
) -> list[Prepared]:
    """prepare for several frames in one call: one round trip to a parse worker."""
    return [prepare(i, processing_ids, allowed_senders, default_charset) for i in inbounds]
