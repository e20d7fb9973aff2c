"""One message's decision, inside the unit of work's transaction (store/unit): the duplicate
control (a resend answered with the first ACK, a reused control id refused or warned), the
identity operation its event stands for, and its answer with the warnings the rules noted.
`Decider` is the `MessageWork` the unit of work runs a batch of prepared messages with."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from enum import StrEnum

from pamfr.hl7.ackmode import EnhancedAck
from pamfr.hl7.errors import MessageRejected, Problem
from pamfr.hl7.events import Operation, is_iti30
from pamfr.hl7.frame import Prepared
from pamfr.hl7.parse import AdtMessage
from pamfr.hl7.problems import refusal_problem, warning_problems
from pamfr.identity.findings import IdentityRefused
from pamfr.identity.rules import Policy
from pamfr.path.answers import STILL_LOCKED, Answered, answer, answer_duplicate, key_of
from pamfr.path.answers import reused_control_id as reused_problem
from pamfr.store.changes import MessageChanges
from pamfr.store.messagelog import Processed
from pamfr.store.pgbatch import Ahead, Lookup
from pamfr.store.repository import IdentityRepository
from pamfr.store.unit import MessageContext

log = logging.getLogger(__name__)


class ReusedControlId(StrEnum):
    """What a message gets whose (MSH-3, MSH-4, MSH-10) was processed with other content."""

    REFUSE = "refuse"  # AE 205, not applied, kept in the log
    APPLY = "apply"  # applied as a new message, with a warning


@dataclass(frozen=True, slots=True)
class ReceiverPolicy:
    iti31_updates_identity: bool = False
    reused_control_id: ReusedControlId = ReusedControlId.REFUSE
    enhanced_ack: EnhancedAck = EnhancedAck.APPLICATION


def apply_message(
    repo: IdentityRepository, message: AdtMessage, iti31_updates_identity: bool
) -> MessageChanges:
    """Run the repository operation a message's event stands for; what it changed."""
    first = message.patients[0]
    policy = Policy(
        production=message.production,
        rewrites_identity=is_iti30(message.header.event) or iti31_updates_identity,
        identity_event=is_iti30(message.header.event),
    )
    match message.operation:
        case Operation.CREATE | Operation.UPDATE:
            repo.upsert(first, message.operation.value, policy)
        case Operation.MERGE:
            repo.merge(first, message.prior_identifiers)
        case Operation.CHANGE_ID:
            repo.change_identifier(first, message.prior_identifiers, message.prior_ins, policy)
        case Operation.LINK:
            repo.link(first, message.patients[1])
        case Operation.UNLINK:
            repo.unlink(first, message.patients[1])
    return repo.changes()


class Decider:
    """The application's side of the unit of work: for each prepared message, its key, what
    it asks of the look-ahead, and its answer (`MessageWork[Prepared, Answered]`)."""

    def __init__(self, policy: ReceiverPolicy = ReceiverPolicy()) -> None:
        self.policy = policy
        self._mode = policy.enhanced_ack

    def key(self, p: Prepared) -> str | None:
        return key_of(p)

    def lookup(self, p: Prepared) -> Lookup | Ahead:
        """A create or update of one patient with one IPP can be looked up with the batch's
        others; a refused message reads nothing; any other may change what a later one finds."""
        m = p.message
        if p.code != "AA" or m is None:
            return Ahead.SKIP
        own = m.patients[0].ipps
        if m.operation not in (Operation.CREATE, Operation.UPDATE) or len(own) != 1:
            return Ahead.STOP
        return Lookup(own[0], tuple(s.value.upper() for s in m.patients[0].ins))

    def decide(self, context: MessageContext, p: Prepared, known: Processed | None) -> Answered:
        """Duplicate control, then the identity operation: the message's answer and changes.
        `known`: the message already processed under this message's key, if any."""
        reused: Problem | None = None
        holder = None  # a reprocess passes a non-AA holder of its key, and may take the key
        if known is not None:
            if p.inbound.reprocess_of is not None and known.outcome != "AA":
                holder = known.id
            elif known.same_content(p.content_sha256):
                return answer_duplicate(p, known, self._mode)
            else:
                reused = reused_problem(p, known)
                if self.policy.reused_control_id is ReusedControlId.REFUSE:
                    return answer(p, "AE", (reused,), keyed=False, mode=self._mode)
                reused = replace(reused, severity="W")
        if p.code != "AA" or p.message is None:
            answered = answer(p, p.code, p.problems, keyed=reused is None, mode=self._mode)
        else:
            repo = context.repository(p.inbound.received_at)
            try:
                changes = apply_message(repo, p.message, self.policy.iti31_updates_identity)
            except IdentityRefused as refused:
                raise MessageRejected(refusal_problem(refused)) from None
            warnings = warning_problems(list(changes.notes))
            problems = (*p.problems, *warnings, *((reused,) if reused else ()))
            answered = answer(p, "AA", problems, keyed=reused is None, mode=self._mode)
            answered = replace(answered, changes=changes)
        if answered.row.dedup_key is not None and holder is not None:
            answered = replace(answered, releases_key_of=holder)
        return answered

    def failed(self, p: Prepared, exc: Exception) -> Answered:
        """A refusal (MessageRejected) answered as it says; anything else AR 207."""
        if isinstance(exc, MessageRejected):
            return answer(p, exc.ack_code, tuple(exc.problems), mode=self._mode)
        log.error("unexpected %s while applying a message", type(exc).__name__)
        log.debug("apply failure", exc_info=exc)
        problem = Problem(207, "", f"application internal error: {type(exc).__name__}")
        return answer(p, "AR", (problem,), mode=self._mode)

    def still_locked(self, p: Prepared) -> Answered:
        return answer(p, "AR", (STILL_LOCKED,), mode=self._mode)
