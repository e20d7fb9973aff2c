"""Where a transaction's writes go: one interface, `WriteSink`, two strategies.

* `ImmediateSink` sends each write when it is made (SQLite, PostgreSQL without a look-ahead,
  every message run in its savepoint);
* `HeldSink` (PostgreSQL, after store/pgbatch looked a batch's patients up) holds the identity
  writes of the messages the look-ahead covered, and the log rows and history of every
  message of the batch, and sends what is still held at the end of the transaction with the
  events and the COMMIT in one round trip (`commit`, through store/pgpipeline), the rows
  taking the ids the look-ahead reserved.

On PostgreSQL (with pipelines) every transaction ends with one round trip: whatever is still
held, the feed lock, the events and the COMMIT (store/pgpipeline.send_and_commit).

The unit of work (store/unit) makes one sink a transaction and gives it to each message's
repository; the repository never asks which one it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import Connection, CursorResult, Executable

from pamfr.store import pgpipeline, writes
from pamfr.store import statements as sql
from pamfr.store.changes import NewPatient, PatientRef, patient_id_of
from pamfr.store.messagelog import LoggedMessage, insert_messages, message_writes
from pamfr.store.writes import Writes


class WriteSink(Protocol):
    """The writes of one transaction, in the order they are made."""

    def insert_patient(self, row: dict) -> PatientRef:
        """A new patient row; its id, or a `NewPatient` whose id is known by the time the
        history is written."""
        ...

    def insert_identifiers(self, rows: list[dict]) -> None: ...

    def update_patient(self, row: dict) -> None:
        """UPDATE_PATIENT with `row` (pid, updated_at and the changed columns)."""
        ...

    def execute(self, statement: Executable, params: dict | None = None) -> CursorResult:
        """Any other write, sent now, after the writes still held."""
        ...

    def flush(self) -> None:
        """Send the writes still held: what comes next reads the store."""
        ...

    def log_messages(self, rows: list[LoggedMessage]) -> list[int]:
        """The log rows' ids, in order; the rows are written now or with the COMMIT."""
        ...

    def write(self, pairs: Writes) -> None:
        """(statement, rows) pairs, after the log rows: written now or with the COMMIT."""
        ...

    def commit(self, last: Writes) -> None:
        """The transaction's last writes. The held strategy sends them with the COMMIT and
        the transaction is over when this returns (the caller's commit finds nothing left
        to do); otherwise they are sent and the caller commits."""
        ...


class ImmediateSink:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert_patient(self, row: dict) -> PatientRef:
        return self.conn.execute(sql.INSERT_PATIENT, row).scalar_one()

    def insert_identifiers(self, rows: list[dict]) -> None:
        if rows:
            self.conn.execute(sql.INSERT_IDENTIFIER, rows)

    def update_patient(self, row: dict) -> None:
        self.conn.execute(sql.UPDATE_PATIENT, row)

    def execute(self, statement: Executable, params: dict | None = None) -> CursorResult:
        return self.conn.execute(statement, params)

    def flush(self) -> None:
        pass

    def log_messages(self, rows: list[LoggedMessage]) -> list[int]:
        return insert_messages(self.conn, rows)

    def write(self, pairs: Writes) -> None:
        writes.execute(self.conn, pairs)

    def commit(self, last: Writes) -> None:
        if pgpipeline.applies(self.conn):
            # The feed lock, the events and the COMMIT in one round trip (not three).
            pgpipeline.send_and_commit(self.conn, last)
        else:
            writes.execute(self.conn, last)


class HeldSink(ImmediateSink):
    """Holds new patients (one statement for all), their identifiers (another) and updates
    (one a set of changed columns) until `flush`, or until `commit` when nothing flushed
    them; after `stop_holding` it sends identity writes when they are made, until a later
    look-ahead of the batch has it hold them again (`reserved`). The log rows and history
    are held throughout. `patient_ids` and `message_ids`: ids the look-ahead reserved for the
    new rows (store/pgpipeline.NEXT_IDS), handed out in order; a flush sends everything held
    in one round trip (store/pgpipeline.send)."""

    def __init__(
        self,
        conn: Connection,
        patient_ids: Sequence[int],
        message_ids: Sequence[int],
        holding: bool = True,
    ) -> None:
        super().__init__(conn)
        self._patient_ids = list(patient_ids)
        self._message_ids = list(message_ids)
        self._holding = holding
        self._patients: list[NewPatient] = []
        self._identifiers: list[dict] = []
        self._updates: dict[tuple[str, ...], list[dict]] = {}
        self._after: Writes = []  # log rows and history, behind the held identity writes

    @property
    def pending(self) -> bool:
        return bool(self._patients or self._identifiers or self._updates or self._after)

    def insert_patient(self, row: dict) -> PatientRef:
        if not self._holding:
            return super().insert_patient(row)
        new = NewPatient(row)
        self._patients.append(new)
        return new

    def insert_identifiers(self, rows: list[dict]) -> None:
        if self._holding:
            self._identifiers += rows
        else:
            super().insert_identifiers(rows)

    def update_patient(self, row: dict) -> None:
        if self._holding:
            self._updates.setdefault(tuple(sorted(row)), []).append(row)
        else:
            super().update_patient(row)

    def execute(self, statement: Executable, params: dict | None = None) -> CursorResult:
        self.flush()
        return super().execute(statement, params)

    def flush(self) -> None:
        """Send the held writes now, in one round trip, the new patients taking reserved ids."""
        if not self.pending:
            return
        self._assign()
        pgpipeline.send(self.conn, [*self._held(), *self._after])
        self._patients, self._identifiers, self._updates, self._after = [], [], {}, []

    def stop_holding(self) -> None:
        """Flush, and send every later identity write when it is made."""
        self.flush()
        self._holding = False

    def reserved(self, patient_ids: Sequence[int], message_ids: Sequence[int], hold: bool) -> None:
        """Ids a later look-ahead of the batch reserved (`message_ids` only when no earlier
        one had), once the writes held before it were flushed; with `hold`, the identity
        writes of the messages it covers are held again."""
        self._patient_ids = list(patient_ids)
        self._message_ids += message_ids
        self._holding = hold

    def log_messages(self, rows: list[LoggedMessage]) -> list[int]:
        # Held, with their reserved ids, even once the identity writes are no longer held:
        # they go with the COMMIT unless a later write flushes them.
        if len(rows) > len(self._message_ids):
            self.flush()
            return super().log_messages(rows)
        ids, self._message_ids = self._message_ids[: len(rows)], self._message_ids[len(rows) :]
        self._assign()
        self._after += message_writes(rows, ids)
        return ids

    def write(self, pairs: Writes) -> None:
        if self.pending:
            self._after += pairs
        else:
            super().write(pairs)

    def commit(self, last: Writes) -> None:
        """Whatever is still held, the last writes and the COMMIT: one round trip."""
        self._assign()
        pgpipeline.send_and_commit(self.conn, [*self._held(), *self._after, *last])
        self._patients, self._identifiers, self._updates, self._after = [], [], {}, []

    def _assign(self) -> None:
        """Each new patient without an id takes the next reserved one (the look-ahead
        reserved one for each patient it covers)."""
        for new in self._patients:
            if new.id is None:
                new.id = self._patient_ids.pop(0)

    def _held(self) -> Writes:
        """The held identity writes as (statement, rows), once every new patient has its id."""
        pairs: Writes = []
        if self._patients:
            rows = [{**n.columns, "id": n.id} for n in self._patients]
            pairs.append((sql.INSERT_IDENTIFIED_PATIENT, rows))
        if self._identifiers:
            rows = [{**r, "patient_id": patient_id_of(r["patient_id"])} for r in self._identifiers]
            pairs.append((sql.INSERT_IDENTIFIER, rows))
        pairs += [(sql.UPDATE_PATIENT, rows) for rows in self._updates.values()]
        return pairs
