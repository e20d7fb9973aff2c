"""The one path every message takes, whatever door it came in by.

prepare(): bytes -> header -> charset decode -> hl7apy parse -> domain values (CPU only, no I/O,
picklable in and out so it can run in a worker process).
Receiver.commit(): duplicate control, identity rules, store, history and message log, for a
batch of prepared messages in one transaction (one savepoint each), then the ACKs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from pamfr.hl7.ack import build_ack, encode_ack
from pamfr.hl7.er7 import SEGMENT_SPLIT, Header, read_header, strip_leading
from pamfr.hl7.errors import MessageRejected, Problem
from pamfr.hl7.events import Operation, is_iti30
from pamfr.hl7.parse import DEFAULT_CHARSET, AdtMessage, check_header, decode, parse_adt
from pamfr.hl7.problems import refusal_problem, warning_problems
from pamfr.identity.findings import IdentityRefused
from pamfr.identity.model import Identifier
from pamfr.identity.rules import Policy
from pamfr.store import pgpipeline
from pamfr.store.authorities import AuthorityBook
from pamfr.store.messagelog import (
    LoggedMessage,
    Processed,
    dedup_key,
    find_processed,
    find_processed_many,
    insert_messages,
    message_writes,
    processed_from,
    processed_queries_pg,
    release_keys,
)
from pamfr.store.repository import (
    ConcurrentChange,
    IdentityRepository,
    Prefetched,
    history_writes,
    prefetch,
    write_histories,
)

log = logging.getLogger(__name__)

DEFAULT_PROCESSING_IDS = ("P", "D", "T")
_ATTEMPTS = 3
# PostgreSQL deadlock_detected and serialization_failure: the transaction may simply run again.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})


@dataclass(frozen=True, slots=True)
class Inbound:
    """One frame as it arrived: the raw bytes and where they came from."""

    raw: bytes
    peer: str = ""
    door: str = "local"  # mllp, file, replay
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    size: int | None = None  # the real size when `raw` is only the head of an oversized frame
    started: float = field(default_factory=time.perf_counter)
    reprocess_of: int | None = None  # the log row whose stored raw this is, run again

    @property
    def oversized(self) -> bool:
        return self.size is not None


@dataclass(frozen=True, slots=True)
class Prepared:
    inbound: Inbound
    header: Header | None
    message: AdtMessage | None
    code: str  # AA when the message is to be applied, else AE / AR
    problems: tuple[Problem, ...] = ()
    content_sha256: str | None = None  # tells a resend from a reused control id


def content_digest(raw: bytes) -> str:
    """SHA-256 of the message with its segment separators and blank lines normalised: the
    same message resent through another door (file, MLLP) has the same digest."""
    segments = (s for s in SEGMENT_SPLIT.split(strip_leading(raw).decode("latin-1")) if s.strip())
    return hashlib.sha256("\r".join(segments).encode("latin-1")).hexdigest()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the receiver answered: the ACK bytes and the facts of the log row."""

    ack: bytes
    code: str  # AA / AE / AR (sent as CA / CE / CR in enhanced mode)
    message_id: int | None
    control_id: str = ""
    event: str = ""
    duplicate: bool = False
    error_text: str | None = None
    problems: tuple[Problem, ...] = ()  # every ERR of the ACK, warnings (severity W) included

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "W")


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


def _brief(exc: BaseException) -> str:
    """The first line of the driver's error: no SQL, no parameters, no DETAIL with key values
    (they hold identifiers and names, which INFO and ERROR lines never show)."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).splitlines()
    return f"{type(orig).__name__}: {lines[0] if lines else ''}"


def _apply(repo: IdentityRepository, message: AdtMessage, iti31_updates_identity: bool) -> None:
    first = message.patients[0]
    policy = Policy(
        production=message.production,
        rewrites_identity=is_iti30(message.header.event) or iti31_updates_identity,
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


def _look_ahead(
    conn: Connection, batch: list[Prepared], keys: list[str]
) -> tuple[dict, Prefetched | None, int]:
    """The batch's messages already processed (by duplicate-control key) and, on PostgreSQL,
    the patients of its leading creates and updates, looked up and locked together, and how
    many messages of the batch use that look-up and hold back their writes until the flush:
    those before the first message that could change what a later one finds (a merge, an
    identifier change, a repeated IPP, a patient designated twice). All in one round trip."""
    ipps: list[Identifier] = []
    ins_values: set[str] = set()  # whose holders the rules will ask for
    positions: list[int] = []  # of the message each IPP comes from
    seen: set[tuple[str, str]] = set()
    count = len(batch)
    for i, p in enumerate(batch):
        m = p.message
        if p.code != "AA" or m is None:
            continue  # refused: no look-up
        own = m.patients[0].ipps
        key = (own[0].authority_key, own[0].value) if len(own) == 1 else None
        if m.operation not in (Operation.CREATE, Operation.UPDATE) or not key or key in seen:
            count = i
            break
        seen.add(key)
        ipps.append(own[0])
        ins_values.update(s.value.upper() for s in m.patients[0].ins)
        positions.append(i)
    found = None
    if ipps:
        found = prefetch(conn, ipps, len(batch), processed_queries_pg(keys), sorted(ins_values))
    if found is None:
        return find_processed_many(conn, keys), None, 0
    prefetched, processed_rows = found
    if prefetched.covered < len(ipps):
        count = positions[prefetched.covered]
    return processed_from(processed_rows), prefetched, count


class _NeedsSavepoints(Exception):
    pass


def _flush(conn: Connection, prefetched: Prefetched) -> None:
    try:
        prefetched.held.flush(conn)
    except IntegrityError as exc:  # another receiver took one of the new IPPs meanwhile
        raise _NeedsSavepoints from exc


@dataclass(slots=True)
class _Entry:
    """A message ready to be logged: its log row, its outcome (message_id not known yet) and
    the identity changes to record against the log row once it exists."""

    row: LoggedMessage
    outcome: Outcome
    repo: IdentityRepository | None = None
    releases_key_of: int | None = None  # the row whose duplicate-control key this one takes


_NOT_PROCESSED = object()


class ReusedControlId(StrEnum):
    """What a message gets whose (MSH-3, MSH-4, MSH-10) was processed with other content."""

    REFUSE = "refuse"  # AE 205, not applied, kept in the log
    APPLY = "apply"  # applied as a new message, with a warning


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
    ) -> None:
        self.engine = engine
        self.processing_ids = tuple(processing_ids)
        # Replaced as a whole on a configuration reload (SIGHUP).
        self.allowed_senders = tuple(allowed_senders)
        self.default_charset = default_charset
        self.iti31_updates_identity = iti31_updates_identity
        self.reused_control_id = ReusedControlId(reused_control_id)
        self.authorities = AuthorityBook()

    def parse_args(self) -> tuple[tuple[str, ...], tuple[str, ...], str]:
        """The arguments of `prepare` after the inbound frame (picklable, for the workers)."""
        return self.processing_ids, self.allowed_senders, self.default_charset

    def prepare(self, inbound: Inbound) -> Prepared:
        return prepare(inbound, *self.parse_args())

    def handle(self, raw: bytes, peer: str = "", door: str = "local") -> Outcome:
        """The whole path for one message, synchronously (replay --local, tests)."""
        return self.commit([self.prepare(Inbound(raw, peer, door))])[0]

    def commit(self, batch: list[Prepared]) -> list[Outcome]:
        """Apply and log a batch in one transaction; ACKs are valid only once this returns.

        When the batch deadlocks with another receiver's transaction (PostgreSQL picks one of
        them to fail), it is rolled back and its messages are applied again one per transaction.
        """
        outcomes = self._transaction(batch)
        if outcomes is None:
            outcomes = [self._alone(p) for p in batch]
        for p, o in zip(batch, outcomes, strict=True):
            self._log_line(p, o)
        return outcomes

    def _alone(self, p: Prepared) -> Outcome:
        for attempt in range(_ATTEMPTS):
            outcomes = self._transaction([p])
            if outcomes is not None:
                return outcomes[0]
            time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        log.error("message still deadlocked after %d attempts, answered AR 206", _ATTEMPTS)
        problem = Problem(206, "", "the record stayed locked by concurrent writers; resend")
        return self._unavailable(p, problem)

    def _transaction(self, batch: list[Prepared]) -> list[Outcome] | None:
        """The outcomes once committed; None when the transaction lost a deadlock.

        A batch first runs without savepoints (two statements a message saved); when any of
        its messages is refused or conflicts, the transaction is rolled back and the batch runs
        again with a savepoint around each message, so one failure does not sink the others.
        """
        keys = [self._key(p) for p in batch]
        if len(set(k for k in keys if k)) == len([k for k in keys if k]):
            try:
                with self.engine.begin() as conn:
                    outcomes = self._optimistic(conn, batch, keys)
                self.authorities.commit()
                return outcomes
            except _NeedsSavepoints:
                self.authorities.rollback()
            except SQLAlchemyError as exc:
                self.authorities.rollback()
                return self._failed(batch, exc)
        try:
            with self.engine.begin() as conn:
                outcomes = [self._one(conn, p) for p in batch]
            self.authorities.commit()
            return outcomes
        except SQLAlchemyError as exc:
            self.authorities.rollback()
            return self._failed(batch, exc)

    def _optimistic(
        self, conn: Connection, batch: list[Prepared], keys: list[str | None]
    ) -> list[Outcome]:
        """The batch without savepoints; _NeedsSavepoints when that does not work out."""
        processed, ahead, ahead_count = _look_ahead(conn, batch, [k for k in keys if k])
        known = [processed.get(k) if k else None for k in keys]
        done: list[Outcome] = []
        entries: list[_Entry] = []
        for i, (p, existing) in enumerate(zip(batch, known, strict=True)):
            if ahead is not None and i == ahead_count:
                _flush(conn, ahead)  # what comes next reads the store again
            entry = self._fast(conn, p, existing, ahead if i < ahead_count else None)
            entries.append(entry)
            if entry.repo is not None and entry.repo.pending_link is not None:
                # The link row is written with its message's; a later A37 may remove it.
                done += self._store_optimistic(conn, entries)
                entries = []
        # Last statement of the transaction: after a prefetch it also commits (pgpipeline).
        return done + self._store_optimistic(conn, entries, ahead)

    def _failed(self, batch: list[Prepared], exc: SQLAlchemyError) -> list[Outcome] | None:
        orig = exc.orig if isinstance(exc, DBAPIError) else None
        if getattr(orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
            log.info("transaction of %d message(s) lost a deadlock", len(batch))
            return None
        log.error(
            "database unavailable, %d message(s) answered AR 207: %s", len(batch), _brief(exc)
        )
        return [self._unavailable(p) for p in batch]

    # -- one message -----------------------------------------------------------

    @staticmethod
    def _key(p: Prepared) -> str | None:
        h = p.header
        return dedup_key(h.sending_app, h.sending_facility, h.control_id) if h else None

    def _fast(
        self, conn: Connection, p: Prepared, existing, prefetched: Prefetched | None
    ) -> _Entry:
        """One message of an optimistic batch: any refusal or conflict reruns the batch."""
        try:
            return self._attempt(conn, p, existing if existing else _NOT_PROCESSED, prefetched)
        except SQLAlchemyError as exc:
            if isinstance(exc, IntegrityError):
                raise _NeedsSavepoints from exc
            raise
        except Exception as exc:  # refusals, conflicts, bugs: each is handled in its savepoint
            raise _NeedsSavepoints from exc

    def _one(self, conn: Connection, p: Prepared) -> Outcome:
        for attempt in range(_ATTEMPTS):
            savepoint = conn.begin_nested()
            try:
                outcome = self._store(conn, [self._attempt(conn, p)])[0]
                savepoint.commit()
                return outcome
            except (IntegrityError, ConcurrentChange) as exc:
                # Another receiver created the same IPP, logged the same control id or renamed
                # an identifier at the same time: look again, the next attempt sees its commit.
                savepoint.rollback()
                self.authorities.rollback()
                log.info("write conflict on attempt %d, retrying: %s", attempt + 1, _brief(exc))
            except MessageRejected as rejected:
                savepoint.rollback()
                self.authorities.rollback()
                entry = self._entry(p, rejected.ack_code, tuple(rejected.problems))
                return self._store(conn, [entry])[0]
            except SQLAlchemyError:
                raise
            except Exception as exc:
                savepoint.rollback()
                self.authorities.rollback()
                log.error("unexpected %s while applying a message", type(exc).__name__)
                log.debug("apply failure", exc_info=True)
                problem = Problem(207, "", f"application internal error: {type(exc).__name__}")
                return self._store(conn, [self._entry(p, "AR", (problem,))])[0]
        problem = Problem(206, "", "the record stayed locked by concurrent writers; resend")
        return self._store(conn, [self._entry(p, "AR", (problem,))])[0]

    def _attempt(
        self, conn: Connection, p: Prepared, known=None, prefetched: Prefetched | None = None
    ) -> _Entry:
        """`known`: the batch's look-up of this message's key (None: look it up here);
        `prefetched`: the batch's look-up of this message's patient, if it was done."""
        key = self._key(p)
        reused: Problem | None = None
        holder = None  # a reprocess passes a non-AA holder of its key, and may take the key
        if key is not None:
            existing = find_processed(conn, key) if known is None else known
            if existing is not _NOT_PROCESSED and existing is not None:
                if p.inbound.reprocess_of is not None and existing.outcome != "AA":
                    holder = existing.id
                elif existing.same_content(p.content_sha256):
                    return self._duplicate(p, existing)
                else:
                    reused = self._reused(p, existing)
                    if self.reused_control_id is ReusedControlId.REFUSE:
                        return self._entry(p, "AE", (reused,), keyed=False)
                    reused = replace(reused, severity="W")
        if p.code != "AA" or p.message is None:
            entry = self._entry(p, p.code, p.problems, keyed=reused is None)
        else:
            repo = IdentityRepository(conn, p.inbound.received_at, prefetched, self.authorities)
            try:
                _apply(repo, p.message, self.iti31_updates_identity)
            except IdentityRefused as refused:
                raise MessageRejected(refusal_problem(refused)) from None
            problems = (*p.problems, *warning_problems(repo.notes), *((reused,) if reused else ()))
            entry = self._entry(p, "AA", problems, keyed=reused is None)
            entry.repo = repo
        if entry.row.dedup_key is not None:
            entry.releases_key_of = holder
        return entry

    @staticmethod
    def _reused(p: Prepared, original: Processed) -> Problem:
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

    @classmethod
    def _store_optimistic(
        cls, conn: Connection, entries: list[_Entry], ahead: Prefetched | None = None
    ) -> list[Outcome]:
        try:
            return cls._store(conn, entries, ahead)
        except IntegrityError as exc:  # e.g. another receiver logged the same key meanwhile
            raise _NeedsSavepoints from exc

    @staticmethod
    def _store(
        conn: Connection, entries: list[_Entry], ahead: Prefetched | None = None
    ) -> list[Outcome]:
        """Send the held identity writes, log the messages, then write their history.

        After a PostgreSQL prefetch whose writes are still held, the rows take the ids it
        reserved and everything travels with the COMMIT in one pipeline, which ends the
        transaction; otherwise a few statements, one after another.
        """
        if not entries:
            return []
        rows = [e.row for e in entries]
        release_keys(conn, [e.releases_key_of for e in entries if e.releases_key_of])

        def histories(ids: list[int]) -> list:
            return [
                (e.repo, message_id, e.outcome.control_id, e.outcome.event)
                for e, message_id in zip(entries, ids, strict=True)
                if e.repo is not None
            ]

        if ahead is not None and ahead.held.pending:
            held, ids = ahead.held, ahead.message_ids[: len(rows)]
            held.assign_ids(ahead.new_patient_ids[: len(held.patients)])
            writes = [*held.writes(), *message_writes(rows, ids), *history_writes(histories(ids))]
            pgpipeline.send_and_commit(conn, writes)
        else:
            ids = insert_messages(conn, rows)
            write_histories(conn, histories(ids))
        return [replace(e.outcome, message_id=i) for e, i in zip(entries, ids, strict=True)]

    def _entry(
        self,
        p: Prepared,
        code: str,
        problems: tuple[Problem, ...],
        *,
        duplicate_of: int | None = None,
        ack: bytes | None = None,
        keyed: bool = True,
    ) -> _Entry:
        h = p.header
        if ack is None:
            ack = encode_ack(build_ack(h, code, problems), h)
        errors = [x for x in problems if x.severity == "E"]
        warnings = [x for x in problems if x.severity == "W"]
        # Only final outcomes are remembered: an AR invites the sender to resend; a duplicate,
        # or a reused control id, is logged under no key (the original holds it).
        final = code in ("AA", "AE") and duplicate_of is None and keyed
        key = self._key(p) if final else None
        row = LoggedMessage(
            received_at=p.inbound.received_at,
            door=p.inbound.door,
            peer=p.inbound.peer,
            raw=p.inbound.raw,
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
            dedup_key=key,
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
        )
        return _Entry(row, outcome)

    def _duplicate(self, p: Prepared, original: Processed) -> _Entry:
        h = p.header
        assert h is not None
        stored = original.ack or encode_ack(build_ack(h, original.outcome), h)
        return self._entry(p, original.outcome, (), duplicate_of=original.id, ack=stored)

    def _unavailable(self, p: Prepared, problem: Problem | None = None) -> Outcome:
        h = p.header
        problem = problem or Problem(
            207, "", "application internal error: the database is unavailable, resend later"
        )
        ack = encode_ack(build_ack(h, "AR", (problem,)), h)
        return Outcome(
            ack, "AR", None, h.control_id if h else "", h.event if h else "", False, problem.text
        )

    @staticmethod
    def _log_line(p: Prepared, o: Outcome) -> None:
        warnings = o.warnings
        fields = {
            "door": p.inbound.door,
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
            *(fields[k] for k in ("door", "peer", "control_id", "event", "outcome")),
            " (duplicate)" if o.duplicate else "",
            f" warnings={fields['warnings']}" if warnings else "",
            fields["duration_ms"],
            extra=fields,
        )
