"""The unit of work: a batch of messages applied and logged in one transaction, whatever the
messages are. The application (path/) says, through `MessageWork`, what each message's
duplicate-control key is, what it asks of the look-ahead, and what it becomes (its log row and
its identity changes); this module runs the transaction, logs each message, writes its
history, and inserts the transaction's change-feed events last of all.

How the transaction runs:
* first without savepoints, with the PostgreSQL look-ahead of store/pgbatch when it applies
  (one round trip for the batch's look-ups, BEGIN included; the identity writes of the
  messages it covers, and the log rows and history of the batch, held in a `HeldSink` and
  sent with the events and the COMMIT in one more round trip);
* when a message of the batch is refused or conflicts, the transaction is rolled back and the
  batch runs again with a savepoint around each message, so one failure does not sink the
  others;
* when the transaction loses a deadlock to another receiver (PostgreSQL), its messages run
  again one per transaction.

The authorities learnt (store/authorities) follow the transaction and its savepoints by
themselves (`AuthorityBook.scope`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Generic, Protocol, TypeVar, cast

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from pamfr.store import pgpipeline
from pamfr.store.authorities import AuthorityBook
from pamfr.store.changes import LoggedChanges, MessageChanges
from pamfr.store.db import brief_error
from pamfr.store.history import history_writes
from pamfr.store.messagelog import LoggedMessage, Processed, find_processed, release_keys
from pamfr.store.outbox import event_rows, outbox_writes
from pamfr.store.pgbatch import Ahead, Lookup, Prefetched, look_ahead
from pamfr.store.repository import ConcurrentChange, IdentityRepository
from pamfr.store.sink import HeldSink, ImmediateSink, WriteSink

log = logging.getLogger(__name__)

_ATTEMPTS = 3
# PostgreSQL deadlock_detected and serialization_failure: the transaction may simply run again.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})


class Loggable(Protocol):
    """What the application decided of a message, as the unit of work logs it."""

    @property
    def row(self) -> LoggedMessage: ...

    @property
    def changes(self) -> MessageChanges | None:
        """What applying it changed; None when it was not applied."""
        ...

    @property
    def releases_key_of(self) -> int | None:
        """The log row whose duplicate-control key this one takes (a reprocess)."""
        ...


Item = TypeVar("Item")
Decided = TypeVar("Decided", bound=Loggable)


@dataclass(frozen=True, slots=True)
class MessageContext:
    """What deciding one message may use: the transaction's connection (reads), its sink
    (writes), and the look-ahead's rows for this message, if it was covered."""

    conn: Connection
    sink: WriteSink
    prefetched: Prefetched | None
    authorities: AuthorityBook

    def repository(self, now: datetime) -> IdentityRepository:
        return IdentityRepository(self.conn, now, self.prefetched, self.authorities, self.sink)


class MessageWork(Protocol[Item, Decided]):
    def key(self, item: Item) -> str | None:
        """The duplicate-control key; None: no control (no control id)."""
        ...

    def lookup(self, item: Item) -> Lookup | Ahead: ...

    def decide(self, context: MessageContext, item: Item, known: Processed | None) -> Decided:
        """The duplicate control, then the identity operation. `known`: the message already
        logged under this item's key, if any. Raises what refuses it, or a conflict."""
        ...

    def failed(self, item: Item, exc: Exception) -> Decided:
        """What a message becomes whose `decide` raised (a refusal, a bug), in its savepoint:
        logged, not applied."""
        ...

    def still_locked(self, item: Item) -> Decided:
        """What a message becomes that conflicted on every attempt: logged, not applied."""
        ...


@dataclass(frozen=True, slots=True)
class Logged(Generic[Decided]):
    decided: Decided
    message_id: int


class NotLogged(Enum):
    """Why a message left no log row: the transaction did not commit."""

    UNAVAILABLE = "unavailable"  # the database failed
    STILL_LOCKED = "still-locked"  # lost a deadlock on every attempt


class _RunWithSavepoints(Exception):
    """A message of a batch run without savepoints was refused or conflicted."""


def _logged_changes(logged: Sequence[Logged]) -> list[LoggedChanges]:
    return [
        LoggedChanges(
            x.decided.changes, x.message_id, x.decided.row.control_id, x.decided.row.event
        )
        for x in logged
        if x.decided.changes is not None
    ]


class UnitOfWork(Generic[Item, Decided]):
    def __init__(self, engine: Engine, work: MessageWork[Item, Decided]) -> None:
        self.engine = engine
        self.work = work
        self.authorities = AuthorityBook()

    def run(self, batch: Sequence[Item]) -> list[Logged[Decided] | NotLogged]:
        """Apply and log a batch in one transaction; each message in its own transaction when
        the batch lost a deadlock. Every result is committed (or not logged) on return."""
        results = self._once(batch)
        if results is None:
            results = [self._alone(item) for item in batch]
        return results

    # -- transactions ----------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One transaction; on PostgreSQL its BEGIN travels with its first statements."""
        with self.authorities.scope(), self.engine.connect() as conn:
            pgpipeline.begin_with_first_round_trip(conn)
            with conn.begin():
                yield conn

    @contextmanager
    def _savepoint(self, conn: Connection) -> Iterator[None]:
        """A savepoint, rolled back when the block raises anything but a database failure
        (which rolls the whole transaction back)."""
        with self.authorities.scope():
            savepoint = conn.begin_nested()
            try:
                yield
            except Exception as exc:
                if not isinstance(exc, SQLAlchemyError) or isinstance(exc, IntegrityError):
                    savepoint.rollback()
                raise
            savepoint.commit()

    def _alone(self, item: Item) -> Logged[Decided] | NotLogged:
        for attempt in range(_ATTEMPTS):
            results = self._once([item])
            if results is not None:
                return results[0]
            time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))
        log.error("message still deadlocked after %d attempts, answered AR 206", _ATTEMPTS)
        return NotLogged.STILL_LOCKED

    def _once(self, batch: Sequence[Item]) -> list[Logged[Decided] | NotLogged] | None:
        """The results once committed; None when the transaction lost a deadlock."""
        keys = [self.work.key(item) for item in batch]
        given = [k for k in keys if k]
        if len(set(given)) == len(given):  # a key twice: the second must see the first
            try:
                with self._transaction() as conn:
                    return list(self._without_savepoints(conn, batch, keys))
            except _RunWithSavepoints:
                pass
            except SQLAlchemyError as exc:
                return self._failed(batch, exc)
        try:
            with self._transaction() as conn:
                sink = ImmediateSink(conn)
                logged = [self._in_savepoint(conn, sink, item) for item in batch]
                sink.commit(self._events(conn, logged))
                return list(logged)
        except SQLAlchemyError as exc:
            return self._failed(batch, exc)

    def _failed(self, batch: Sequence[Item], exc: SQLAlchemyError) -> list | None:
        orig = exc.orig if isinstance(exc, DBAPIError) else None
        if getattr(orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
            log.info("transaction of %d message(s) lost a deadlock", len(batch))
            return None
        log.error(
            "database unavailable, %d message(s) answered AR 207: %s", len(batch), brief_error(exc)
        )
        return [NotLogged.UNAVAILABLE for _ in batch]

    def _without_savepoints(
        self, conn: Connection, batch: Sequence[Item], keys: list[str | None]
    ) -> list[Logged[Decided]]:
        lookups = [self.work.lookup(item) for item in batch]
        processed, ahead, ahead_end = look_ahead(conn, lookups, [k for k in keys if k])
        sink: WriteSink = ImmediateSink(conn)
        held: HeldSink | None = None
        if ahead is not None:
            held = sink = HeldSink(conn, ahead.new_patient_ids, ahead.message_ids)
        again = pgpipeline.applies(conn)  # look ahead again past where a look-ahead stopped
        done: list[Logged[Decided]] = []
        decided: list[Decided] = []
        for i, (item, key) in enumerate(zip(batch, keys, strict=True)):
            if ahead is not None and i == ahead_end:
                try:  # what comes next reads the store again
                    cast(HeldSink, held).stop_holding()
                except IntegrityError as exc:  # another receiver took one of the new IPPs
                    raise _RunWithSavepoints from exc
                ahead = None
            if ahead is None and again and i > 0:
                # The rest of the batch, once what came before is written: its leading
                # creates and updates looked up together again (each look-ahead locks in IPP
                # order). The duplicate-control keys were read by the first look-ahead; the
                # log ids were reserved for the whole batch by the first that ran (if none
                # did yet, this one reserves them).
                reserve = 0 if held is not None else len(batch)
                _, ahead, count = look_ahead(conn, lookups[i:], [], messages=reserve)
                if ahead is not None:
                    if held is None:
                        held = sink = HeldSink(conn, [], [], holding=False)
                    held.reserved(ahead.new_patient_ids, ahead.message_ids, hold=count > 0)
                    ahead_end = i + count
                    if count == 0:
                        ahead = None
            context = MessageContext(
                conn, sink, ahead if ahead is not None and i < ahead_end else None, self.authorities
            )
            try:
                d = self.work.decide(context, item, processed.get(key) if key else None)
            except Exception as exc:  # refusals, conflicts, bugs: each in its savepoint
                if isinstance(exc, SQLAlchemyError) and not isinstance(exc, IntegrityError):
                    raise
                raise _RunWithSavepoints from exc
            decided.append(d)
            if d.changes is not None and d.changes.link is not None:
                # The link row is written with its message's; a later A24 reads it, a later
                # A37 may remove it: sent now, not held for the COMMIT.
                done += self._log_or_rerun(conn, sink, decided)
                decided = []
                try:
                    sink.flush()
                except IntegrityError as exc:
                    raise _RunWithSavepoints from exc
        done += self._log_or_rerun(conn, sink, decided)
        try:  # last of all: after the held writes of a look-ahead, it also commits
            sink.commit(self._events(conn, done))
        except IntegrityError as exc:
            raise _RunWithSavepoints from exc
        return done

    def _log_or_rerun(
        self, conn: Connection, sink: WriteSink, decided: list[Decided]
    ) -> list[Logged[Decided]]:
        try:
            return self._log(conn, sink, decided)
        except IntegrityError as exc:  # e.g. another receiver logged the same key meanwhile
            raise _RunWithSavepoints from exc

    def _in_savepoint(self, conn: Connection, sink: WriteSink, item: Item) -> Logged[Decided]:
        context = MessageContext(conn, sink, None, self.authorities)
        for attempt in range(_ATTEMPTS):
            try:
                with self._savepoint(conn):
                    key = self.work.key(item)
                    known = find_processed(conn, [key]).get(key) if key else None
                    return self._log(conn, sink, [self.work.decide(context, item, known)])[0]
            except (IntegrityError, ConcurrentChange) as exc:
                # Another receiver created the same IPP, logged the same control id or renamed
                # an identifier at the same time: look again, the next attempt sees its commit.
                log.info(
                    "write conflict on attempt %d, retrying: %s", attempt + 1, brief_error(exc)
                )
            except SQLAlchemyError:
                raise
            except Exception as exc:
                return self._log(conn, sink, [self.work.failed(item, exc)])[0]
        return self._log(conn, sink, [self.work.still_locked(item)])[0]

    # -- logging ---------------------------------------------------------------

    @staticmethod
    def _log(conn: Connection, sink: WriteSink, decided: list[Decided]) -> list[Logged[Decided]]:
        """Log the messages (their held identity writes go first), then write their history."""
        if not decided:
            return []
        release_keys(conn, [d.releases_key_of for d in decided if d.releases_key_of])
        ids = sink.log_messages([d.row for d in decided])
        logged = [Logged(d, i) for d, i in zip(decided, ids, strict=True)]
        sink.write(history_writes(_logged_changes(logged)))
        return logged

    @staticmethod
    def _events(conn: Connection, logged: Sequence[Logged]) -> list:
        """The transaction's last writes: the change-feed events of every message it logged
        (after the feed lock on PostgreSQL: docs/architecture.md, "The change feed")."""
        return outbox_writes(conn.dialect, event_rows(_logged_changes(logged)))
