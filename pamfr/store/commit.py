"""The store's one face: `Store.commit(batch)` applies and logs a batch of prepared messages
in one transaction (duplicate control, identity decisions, identity writes, history, message
log) and returns their outcomes, valid once it returns.

How the transaction runs:
* first without savepoints (two statements a message saved), with the PostgreSQL look-ahead
  of store/pgbatch when it applies (one round trip for the batch's look-ups, the writes sent
  with the COMMIT);
* when a message of the batch is refused or conflicts, the transaction is rolled back and the
  batch runs again with a savepoint around each message, so one failure does not sink the
  others;
* when the transaction loses a deadlock to another receiver (PostgreSQL), its messages run
  again one per transaction.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, replace
from enum import StrEnum

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from pamfr.hl7.ackmode import EnhancedAck
from pamfr.hl7.errors import MessageRejected, Problem
from pamfr.hl7.events import Operation, is_iti30
from pamfr.hl7.frame import Outcome, Prepared
from pamfr.hl7.parse import AdtMessage
from pamfr.hl7.problems import refusal_problem, warning_problems
from pamfr.identity.findings import IdentityRefused
from pamfr.identity.rules import Policy
from pamfr.store import pgpipeline, writes
from pamfr.store.answers import (
    STILL_LOCKED,
    Answered,
    answer,
    answer_duplicate,
    key_of,
    reused_control_id,
    unlogged,
)
from pamfr.store.authorities import AuthorityBook
from pamfr.store.db import brief_error
from pamfr.store.history import history_writes
from pamfr.store.messagelog import (
    Processed,
    find_processed,
    insert_messages,
    message_writes,
    release_keys,
)
from pamfr.store.outbox import event_rows, outbox_writes
from pamfr.store.pgbatch import Prefetched, look_ahead
from pamfr.store.repository import ConcurrentChange, IdentityRepository

log = logging.getLogger(__name__)

_ATTEMPTS = 3
# PostgreSQL deadlock_detected and serialization_failure: the transaction may simply run again.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})


class ReusedControlId(StrEnum):
    """What a message gets whose (MSH-3, MSH-4, MSH-10) was processed with other content."""

    REFUSE = "refuse"  # AE 205, not applied, kept in the log
    APPLY = "apply"  # applied as a new message, with a warning


@dataclass(frozen=True, slots=True)
class StorePolicy:
    iti31_updates_identity: bool = False
    reused_control_id: ReusedControlId = ReusedControlId.REFUSE
    enhanced_ack: EnhancedAck = EnhancedAck.APPLICATION


class _RunWithSavepoints(Exception):
    """A message of a batch run without savepoints was refused or conflicted."""


def apply_message(
    repo: IdentityRepository, message: AdtMessage, iti31_updates_identity: bool
) -> None:
    """The repository operation a message's event stands for."""
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


class Store:
    def __init__(self, engine: Engine, policy: StorePolicy = StorePolicy()) -> None:
        self.engine = engine
        self.policy = policy
        self._mode = policy.enhanced_ack
        self.authorities = AuthorityBook()

    def commit(self, batch: list[Prepared]) -> list[Outcome]:
        """Apply and log a batch in one transaction; each message in its own transaction when
        the batch lost a deadlock."""
        outcomes = self._commit_once(batch)
        if outcomes is None:
            outcomes = [self._commit_alone(p) for p in batch]
        return outcomes

    # -- transactions ----------------------------------------------------------

    def _commit_alone(self, p: Prepared) -> Outcome:
        for attempt in range(_ATTEMPTS):
            outcomes = self._commit_once([p])
            if outcomes is not None:
                return outcomes[0]
            time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        log.error("message still deadlocked after %d attempts, answered AR 206", _ATTEMPTS)
        return unlogged(p, STILL_LOCKED, self.policy.enhanced_ack)

    def _commit_once(self, batch: list[Prepared]) -> list[Outcome] | None:
        """The outcomes once committed; None when the transaction lost a deadlock."""
        keys = [key_of(p) for p in batch]
        given = [k for k in keys if k]
        if len(set(given)) == len(given):  # a key twice: the second must see the first
            try:
                with self.engine.begin() as conn:
                    events: list[dict] = []
                    outcomes = self._run_without_savepoints(conn, batch, keys, events)
                    writes.execute(conn, outbox_writes(conn, events))
                self.authorities.commit()
                return outcomes
            except _RunWithSavepoints:
                self.authorities.rollback()
            except SQLAlchemyError as exc:
                self.authorities.rollback()
                return self._failed(batch, exc)
        try:
            with self.engine.begin() as conn:
                events = []
                outcomes = [self._run_in_savepoint(conn, p, events) for p in batch]
                writes.execute(conn, outbox_writes(conn, events))
            self.authorities.commit()
            return outcomes
        except SQLAlchemyError as exc:
            self.authorities.rollback()
            return self._failed(batch, exc)

    def _failed(self, batch: list[Prepared], exc: SQLAlchemyError) -> list[Outcome] | None:
        orig = exc.orig if isinstance(exc, DBAPIError) else None
        if getattr(orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
            log.info("transaction of %d message(s) lost a deadlock", len(batch))
            return None
        log.error(
            "database unavailable, %d message(s) answered AR 207: %s", len(batch), brief_error(exc)
        )
        return [unlogged(p, mode=self.policy.enhanced_ack) for p in batch]

    def _run_without_savepoints(
        self, conn: Connection, batch: list[Prepared], keys: list[str | None], events: list[dict]
    ) -> list[Outcome]:
        processed, ahead, ahead_count = look_ahead(conn, batch, [k for k in keys if k])
        done: list[Outcome] = []
        answered: list[Answered] = []
        for i, (p, key) in enumerate(zip(batch, keys, strict=True)):
            if ahead is not None and i == ahead_count:
                try:  # what comes next reads the store again
                    ahead.held.flush(conn)
                except IntegrityError as exc:  # another receiver took one of the new IPPs
                    raise _RunWithSavepoints from exc
            try:
                a = self._decide(
                    conn, p, processed.get(key) if key else None, ahead if i < ahead_count else None
                )
            except Exception as exc:  # refusals, conflicts, bugs: each in its savepoint
                if isinstance(exc, SQLAlchemyError) and not isinstance(exc, IntegrityError):
                    raise
                raise _RunWithSavepoints from exc
            answered.append(a)
            if a.repo is not None and a.repo.pending_link is not None:
                # The link row is written with its message's; a later A37 may remove it.
                done += self._write_or_rerun(conn, answered, events)
                answered = []
        # Last statement of the transaction: after a look-ahead it also commits (pgpipeline).
        return done + self._write_or_rerun(conn, answered, events, ahead)

    def _write_or_rerun(
        self,
        conn: Connection,
        answered: list[Answered],
        events: list[dict],
        ahead: Prefetched | None = None,
    ) -> list[Outcome]:
        try:
            return self._write(conn, answered, events, ahead)
        except IntegrityError as exc:  # e.g. another receiver logged the same key meanwhile
            raise _RunWithSavepoints from exc

    def _run_in_savepoint(self, conn: Connection, p: Prepared, events: list[dict]) -> Outcome:
        for attempt in range(_ATTEMPTS):
            savepoint = conn.begin_nested()
            try:
                key = key_of(p)
                known = find_processed(conn, [key]).get(key) if key else None
                outcome = self._write(conn, [self._decide(conn, p, known)], events)[0]
                savepoint.commit()
                return outcome
            except (IntegrityError, ConcurrentChange) as exc:
                # Another receiver created the same IPP, logged the same control id or renamed
                # an identifier at the same time: look again, the next attempt sees its commit.
                savepoint.rollback()
                self.authorities.rollback()
                log.info(
                    "write conflict on attempt %d, retrying: %s", attempt + 1, brief_error(exc)
                )
            except MessageRejected as rejected:
                savepoint.rollback()
                self.authorities.rollback()
                refused = answer(p, rejected.ack_code, tuple(rejected.problems), mode=self._mode)
                return self._write(conn, [refused], events)[0]
            except SQLAlchemyError:
                raise
            except Exception as exc:
                savepoint.rollback()
                self.authorities.rollback()
                log.error("unexpected %s while applying a message", type(exc).__name__)
                log.debug("apply failure", exc_info=True)
                problem = Problem(207, "", f"application internal error: {type(exc).__name__}")
                refused = answer(p, "AR", (problem,), mode=self._mode)
                return self._write(conn, [refused], events)[0]
        return self._write(conn, [answer(p, "AR", (STILL_LOCKED,), mode=self._mode)], events)[0]

    # -- one message -----------------------------------------------------------

    def _decide(
        self,
        conn: Connection,
        p: Prepared,
        known: Processed | None,
        prefetched: Prefetched | None = None,
    ) -> Answered:
        """Duplicate control, then the identity operation: the message's answer and writes.
        `known`: the message already processed under this message's key, if any;
        `prefetched`: the batch's look-up of this message's patient, if it was done."""
        reused: Problem | None = None
        holder = None  # a reprocess passes a non-AA holder of its key, and may take the key
        if known is not None:
            if p.inbound.reprocess_of is not None and known.outcome != "AA":
                holder = known.id
            elif known.same_content(p.content_sha256):
                return answer_duplicate(p, known, self._mode)
            else:
                reused = reused_control_id(p, known)
                if self.policy.reused_control_id is ReusedControlId.REFUSE:
                    return answer(p, "AE", (reused,), keyed=False, mode=self._mode)
                reused = replace(reused, severity="W")
        if p.code != "AA" or p.message is None:
            answered = answer(p, p.code, p.problems, keyed=reused is None, mode=self._mode)
        else:
            repo = IdentityRepository(conn, p.inbound.received_at, prefetched, self.authorities)
            try:
                apply_message(repo, p.message, self.policy.iti31_updates_identity)
            except IdentityRefused as refused:
                raise MessageRejected(refusal_problem(refused)) from None
            problems = (*p.problems, *warning_problems(repo.notes), *((reused,) if reused else ()))
            answered = answer(p, "AA", problems, keyed=reused is None, mode=self._mode)
            answered.repo = repo
        if answered.row.dedup_key is not None:
            answered.releases_key_of = holder
        return answered

    @staticmethod
    def _write(
        conn: Connection,
        answered: list[Answered],
        events: list[dict],
        ahead: Prefetched | None = None,
    ) -> list[Outcome]:
        """Send the held identity writes, log the messages, then write their history; their
        change-feed events join `events`, which the transaction writes last of all.

        After a PostgreSQL look-ahead whose writes are still held, the rows take the ids it
        reserved and everything, the events of the whole transaction included, travels with
        the COMMIT in one pipeline, which ends the transaction; otherwise a few statements,
        one after another.
        """
        if not answered:
            return []
        rows = [a.row for a in answered]
        release_keys(conn, [a.releases_key_of for a in answered if a.releases_key_of])

        def histories(ids: list[int]) -> list:
            return [
                (a.repo, message_id, a.outcome.control_id, a.outcome.event)
                for a, message_id in zip(answered, ids, strict=True)
                if a.repo is not None
            ]

        if ahead is not None and ahead.held.pending:
            held, ids = ahead.held, ahead.message_ids[: len(rows)]
            held.assign_ids(ahead.new_patient_ids[: len(held.patients)])
            events += event_rows(histories(ids))
            pgpipeline.send_and_commit(
                conn,
                [
                    *held.writes(),
                    *message_writes(rows, ids),
                    *history_writes(histories(ids)),
                    *outbox_writes(conn, events),
                ],
            )
            events.clear()
        else:
            ids = insert_messages(conn, rows)
            writes.execute(conn, history_writes(histories(ids)))
            events += event_rows(histories(ids))
        return [replace(a.outcome, message_id=i) for a, i in zip(answered, ids, strict=True)]
