"""The one path every message takes, whatever door it came in by: prepare (hl7/prepare: CPU
only, in a parse worker), then `Receiver.commit`: the batch runs through the store's unit of
work (store/unit: one transaction), each message decided by path/apply, and the outcomes carry
the ACK each door sends once the commit returned."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import replace

from sqlalchemy import Engine

from pamfr.hl7.ackmode import EnhancedAck
from pamfr.hl7.frame import Door, Inbound, Outcome, Prepared
from pamfr.hl7.parse import DEFAULT_CHARSET
from pamfr.hl7.prepare import DEFAULT_PROCESSING_IDS, prepare
from pamfr.path.answers import STILL_LOCKED, UNAVAILABLE, Answered, unlogged
from pamfr.path.apply import Decider, ReceiverPolicy, ReusedControlId
from pamfr.store.unit import Logged, NotLogged, UnitOfWork

log = logging.getLogger(__name__)


class Receiver:
    def __init__(
        self,
        engine: Engine,
        *,
        processing_ids: Iterable[str] = DEFAULT_PROCESSING_IDS,
        allowed_senders: Iterable[str] = (),
        default_charset: str = DEFAULT_CHARSET,
        iti31_updates_identity: bool = False,
        reused_control_id: ReusedControlId | str = ReusedControlId.REFUSE,
        enhanced_ack: EnhancedAck | str = EnhancedAck.APPLICATION,
    ) -> None:
        self.engine = engine
        self.processing_ids = tuple(processing_ids)
        # Replaced as a whole on a configuration reload (SIGHUP).
        self.allowed_senders = tuple(allowed_senders)
        self.default_charset = default_charset
        self.policy = ReceiverPolicy(
            iti31_updates_identity, ReusedControlId(reused_control_id), EnhancedAck(enhanced_ack)
        )
        self.unit: UnitOfWork[Prepared, Answered] = UnitOfWork(engine, Decider(self.policy))

    def parse_args(self) -> tuple[tuple[str, ...], tuple[str, ...], str]:
        """The arguments of `prepare` after the inbound frame (picklable, for the workers)."""
        return self.processing_ids, self.allowed_senders, self.default_charset

    def prepare(self, inbound: Inbound) -> Prepared:
        return prepare(inbound, *self.parse_args())

    def handle(self, raw: bytes, peer: str = "", door: Door = Door.LOCAL) -> Outcome:
        """The whole path for one message, synchronously (tests, tools)."""
        return self.commit([self.prepare(Inbound(raw, peer, door))])[0]

    def commit(self, batch: list[Prepared]) -> list[Outcome]:
        """Apply and log a batch in one transaction; ACKs are valid only once this returns."""
        results = self.unit.run(batch)
        outcomes = [self._outcome(p, r) for p, r in zip(batch, results, strict=True)]
        for p, o in zip(batch, outcomes, strict=True):
            _log_line(p, o)
        return outcomes

    def _outcome(self, p: Prepared, result: Logged[Answered] | NotLogged) -> Outcome:
        if isinstance(result, Logged):
            return replace(result.decided.outcome, message_id=result.message_id)
        problem = STILL_LOCKED if result is NotLogged.STILL_LOCKED else UNAVAILABLE
        return unlogged(p, problem, self.policy.enhanced_ack)


def _one_line(value: str) -> str:
    """A value a sender chose (a dropped file's name, a control id) as a log line may hold
    it: quoted and escaped (Python's repr) when it has a newline or another character that
    is not printable, so that it cannot end the line and forge the next one."""
    return value if value.isprintable() else repr(value)


def _log_line(p: Prepared, o: Outcome) -> None:
    warnings = o.warnings
    fields = {
        "door": str(p.inbound.door),
        "peer": p.inbound.peer or "-",
        "control_id": o.control_id or "-",
        "event": o.event or "-",
        "outcome": o.code,
        "duplicate": o.duplicate,
        "duration_ms": round((time.perf_counter() - p.inbound.started) * 1000, 1),
    }
    if warnings:
        fields["warnings"] = ",".join(f"{w.code}@{w.location}" for w in warnings)
    if p.inbound.reprocess_of is not None:
        fields["reprocess_of"] = p.inbound.reprocess_of
    log.info(
        "%s %s control_id=%s event=%s outcome=%s%s%s %.1fms",
        *(_one_line(fields[k]) for k in ("door", "peer", "control_id", "event", "outcome")),
        " (duplicate)" if o.duplicate else "",
        f" warnings={fields['warnings']}" if warnings else "",
        fields["duration_ms"],
        extra=fields,
    )
