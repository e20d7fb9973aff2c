"""A message's answer and its log row, built together: the ACK is logged with the row, so a
resend is answered with the very same bytes. An `Answered` is what the unit of work
(store/unit) logs; `unlogged` answers a message the transaction could not log."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pamfr.hl7.ack import build_ack, encode_ack
from pamfr.hl7.ackmode import EnhancedAck, choose_ack
from pamfr.hl7.errors import Problem
from pamfr.hl7.frame import Outcome, Prepared
from pamfr.store.changes import MessageChanges
from pamfr.store.messagelog import LoggedMessage, Processed, dedup_key

log = logging.getLogger(__name__)

UNAVAILABLE = Problem(
    207, "", "application internal error: the database is unavailable, resend later"
)
STILL_LOCKED = Problem(206, "", "the record stayed locked by concurrent writers; resend")


@dataclass(frozen=True, slots=True)
class Answered:
    """A message ready to be logged: its log row, its outcome (message_id not known yet) and
    the identity changes to record against the log row once it exists (None: not applied)."""

    row: LoggedMessage
    outcome: Outcome
    changes: MessageChanges | None = None
    releases_key_of: int | None = None  # the row whose duplicate-control key this one takes


# Bytes of a frame answered AR kept in the message log (enough to read its MSH and PID).
AR_RAW_KEPT = 4096


def key_of(p: Prepared) -> str | None:
    h = p.header
    return dedup_key(h.sending_app, h.sending_facility, h.control_id) if h else None


def answer(
    p: Prepared,
    code: str,
    problems: tuple[Problem, ...],
    *,
    duplicate_of: int | None = None,
    ack: bytes | None = None,
    keyed: bool = True,
    mode: EnhancedAck = EnhancedAck.APPLICATION,
) -> Answered:
    h = p.header
    if ack is None:
        ack = encode_ack(build_ack(h, code, problems, mode), h)
    choice = choose_ack(h, code, mode)
    errors = [x for x in problems if x.severity == "E"]
    warnings = [x for x in problems if x.severity == "W"]
    # Only final outcomes are remembered: an AR invites the sender to resend; a duplicate,
    # or a reused control id, is logged under no key (the original holds it).
    final = code in ("AA", "AE") and duplicate_of is None and keyed
    row = LoggedMessage(
        received_at=p.inbound.received_at,
        door=str(p.inbound.door),
        peer=p.inbound.peer,
        # a refused frame may be junk from any peer: only its head is kept, its size noted
        raw=p.inbound.raw[:AR_RAW_KEPT] if code == "AR" else p.inbound.raw,
        raw_size=p.inbound.size or len(p.inbound.raw),
        outcome=code,
        ack=ack,
        sending_app=h.sending_app if h else "",
        sending_facility=h.sending_facility if h else "",
        control_id=h.control_id if h else "",
        message_type=h.message_type if h else "",
        event=h.event if h else "",
        charset=h.charset if h else "",
        error_text="; ".join(f"{x.code} {x.location}: {x.text}" for x in errors) or None,
        dedup_key=key_of(p) if final else None,
        duplicate_of=duplicate_of,
        reprocess_of=p.inbound.reprocess_of,
        duration_ms=(time.perf_counter() - p.inbound.started) * 1000,
        warnings="; ".join(f"{x.code} {x.location}: {x.text}" for x in warnings) or None,
        err_codes=" ".join(dict.fromkeys(str(x.code) for x in problems)) or None,
        content_sha256=p.content_sha256,
    )
    outcome = Outcome(
        ack,
        code,
        None,
        row.control_id,
        row.event,
        duplicate=duplicate_of is not None,
        error_text=None if code == "AA" else "; ".join(x.text for x in errors) or None,
        problems=problems,
        msa_code=choice.msa_code,
        sent=choice.sent,
    )
    return Answered(row, outcome)


def answer_duplicate(
    p: Prepared, original: Processed, mode: EnhancedAck = EnhancedAck.APPLICATION
) -> Answered:
    """A resend: the first message's ACK again, logged as a duplicate of it."""
    h = p.header
    assert h is not None
    stored = original.ack or encode_ack(build_ack(h, original.outcome, (), mode), h)
    return answer(p, original.outcome, (), duplicate_of=original.id, ack=stored, mode=mode)


def reused_control_id(p: Prepared, original: Processed) -> Problem:
    """A control id this sender already used for another message (a GAM whose counter
    restarted): never answered with the first message's ACK and silently dropped."""
    log.warning(
        "control_id=%s from %s was already used by message %d with other content",
        p.header.control_id if p.header else "-",
        p.inbound.peer or "-",
        original.id,
    )
    return Problem(
        205,
        "MSH^1^10",
        f"control id already used by this sender for another message (log id {original.id})",
    )


def unlogged(
    p: Prepared, problem: Problem = UNAVAILABLE, mode: EnhancedAck = EnhancedAck.APPLICATION
) -> Outcome:
    """An AR for a message that could not be logged (the database did not answer)."""
    h = p.header
    ack = encode_ack(build_ack(h, "AR", (problem,), mode), h)
    choice = choose_ack(h, "AR", mode)
    return Outcome(
        ack,
        "AR",
        None,
        h.control_id if h else "",
        h.event if h else "",
        False,
        problem.text,
        (problem,),
        choice.msa_code,
        choice.sent,
    )
