"""PostgreSQL batch strategy: a batch's leading creates and updates looked up, locked and
loaded in one round trip (with the duplicate-control look-up and ids reserved for the new
rows), their writes held back and sent with the COMMIT (store/pgpipeline)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, Executable

from pamfr.hl7.events import Operation
from pamfr.hl7.frame import Prepared
from pamfr.identity.model import IPP_TYPE, Identifier
from pamfr.store import pgpipeline
from pamfr.store import statements as sql
from pamfr.store.changes import NewPatient, patient_id_of
from pamfr.store.messagelog import Processed, find_processed, processed_from, processed_queries
from pamfr.store.writes import Writes


@dataclass
class HeldWrites:
    """The writes of a batch's prefetched messages, sent together: new patients in one
    statement, their identifiers in another, updates in one per set of changed columns."""

    patients: list[NewPatient] = field(default_factory=list)
    identifiers: list[dict] = field(default_factory=list)
    updates: dict[tuple[str, ...], list[dict]] = field(default_factory=dict)

    @property
    def pending(self) -> bool:
        return bool(self.patients or self.identifiers or self.updates)

    def assign_ids(self, ids: list[int]) -> None:
        for new, patient_id in zip(self.patients, ids, strict=True):
            new.id = patient_id

    def flush(self, conn: Connection) -> None:
        """Send the writes now, the new patients taking their ids from the database."""
        if self.patients:
            rows = [new.columns for new in self.patients]
            self.assign_ids(conn.execute(sql.INSERT_PATIENTS, rows).scalars().all())
        for statement, rows in self.writes(with_patients=False):
            conn.execute(statement, rows)
        self.patients, self.identifiers, self.updates = [], [], {}

    def writes(self, with_patients: bool = True) -> Writes:
        """The statements and their rows, once every new patient has its id."""
        writes: list[tuple[Executable, list[dict]]] = []
        if with_patients and self.patients:
            writes.append(
                (sql.INSERT_IDENTIFIED_PATIENT, [{**n.columns, "id": n.id} for n in self.patients])
            )
        if self.identifiers:
            rows = [{**r, "patient_id": patient_id_of(r["patient_id"])} for r in self.identifiers]
            writes.append((sql.INSERT_IDENTIFIER, rows))
        writes += [(sql.UPDATE_PATIENT, rows) for rows in self.updates.values()]
        return writes


@dataclass(frozen=True)
class Prefetched:
    """What `prefetch` found for a batch: by IPP (authority key, value), the locked patient
    row or None when no patient holds it; by patient id, its identifiers; and the count of
    leading IPPs it covers (it stops before an IPP whose patient an earlier one designates,
    so that message looks up again once the held writes are flushed)."""

    patients: dict[tuple[str, str], dict | None]
    identifiers: dict[int, list[dict]]
    covered: int
    new_patient_ids: list[int]  # enough for every covered IPP to be a new patient
    message_ids: list[int]  # enough for the whole batch
    held: HeldWrites = field(default_factory=HeldWrites)
    # By INS the messages state: the ids of the active patients holding it when the batch
    # began (under a lock on the INS), and who took or let go of it since in the batch.
    ins_holders: dict[str, set[int]] = field(default_factory=dict)
    ins_changes: dict[str, dict[object, bool]] = field(default_factory=dict)

    def others_may_hold(self, ins_value: str, exclude: object) -> bool:
        """Whether a patient other than `exclude` may hold the INS; True when not known."""
        if ins_value not in self.ins_holders:
            return True
        holders: set[object] = set(self.ins_holders[ins_value])
        for who, holds in self.ins_changes.get(ins_value, {}).items():
            (holders.add if holds else holders.discard)(who)
        holders.discard(exclude)
        return bool(holders)

    def ins_moved(self, who: object, old: str | None, new: str | None) -> None:
        if old:
            self.ins_changes.setdefault(old, {})[who] = False
        if new:
            self.ins_changes.setdefault(new, {})[who] = True


def prefetch(
    conn: Connection,
    ipps: list[Identifier],
    messages: int,
    first: Sequence[tuple[Executable, dict]] = (),
    ins_values: Sequence[str] = (),
) -> tuple[Prefetched, list[dict]] | None:
    """Look up, lock and load the patients of several single-IPP messages in one round trip,
    with ids for the new rows of a batch of `messages`, the active holders of the INS the
    messages state (each INS locked first), and the rows of the `first` queries sent ahead of
    them. The caller makes sure no message of the batch changes what another's
    look-up finds: distinct IPPs, and no merge or identifier change before them. None on
    SQLite, where a look-up costs less than the batching (and there is no row lock to take)."""
    if conn.dialect.name != "postgresql" or not pgpipeline.supported():
        return None
    wanted = [(i.authority_key, i.value) for i in ipps]
    # Locked in one order (by IPP) by every receiver's prefetch; a merge locks by id, and a
    # deadlock between the two is retried. The identifiers are read once all the locks are
    # held (the statements run in order), so they are current: a patient whose IPP moved
    # meanwhile fails its re-check later.
    order = sorted(set(wanted))
    params = [{"k": k, "v": v, "t": IPP_TYPE} for k, v in order]
    inses = sorted(set(ins_values))
    results = pgpipeline.read(
        conn,
        [
            *first,
            *((sql.LOAD_BY_IPP_FOR_UPDATE, p) for p in params),
            *((sql.IDENTIFIERS_BY_IPP, p) for p in params),
            *(
                (statement, {"v": v})
                for v in inses
                for statement in (sql.LOCK_INS, sql.ACTIVE_HOLDERS)
            ),
            (pgpipeline.NEXT_IDS, {"patients": len(ipps), "messages": messages}),
        ],
    )
    first_rows = [row for rows in results[: len(first)] for row in rows]
    del results[: len(first)]
    ids = results.pop()
    holders = results[len(results) - 2 * len(inses) :]
    del results[len(results) - 2 * len(inses) :]
    ins_holders = {v: {r["id"] for r in rows} for v, rows in zip(inses, holders[1::2], strict=True)}
    found = {
        key: rows[0] if rows else None
        for key, rows in zip(order, results[: len(order)], strict=True)
    }
    # A patient two of the IPPs designate comes back twice: each identifier once, in id order.
    by_id = {r["id"]: r for rows in results[len(order) :] for r in rows}
    patients: dict[tuple[str, str], dict | None] = {}
    claimed: set[int] = set()
    for key in wanted:
        row = found.get(key)
        if row is not None:
            if row["id"] in claimed:
                break
            claimed.add(row["id"])
        patients[key] = row
    identifiers: dict[int, list[dict]] = {pid: [] for pid in claimed}
    for i in sorted(by_id):
        if by_id[i]["patient_id"] in identifiers:
            identifiers[by_id[i]["patient_id"]].append(by_id[i])
    reserved = ids[0]
    prefetched = Prefetched(
        patients,
        identifiers,
        len(patients),
        reserved["patient_ids"],
        reserved["message_ids"],
        ins_holders=ins_holders,
    )
    return prefetched, first_rows


def look_ahead(
    conn: Connection, batch: list[Prepared], keys: list[str]
) -> tuple[dict[str, Processed], Prefetched | None, int]:
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
        found = prefetch(conn, ipps, len(batch), processed_queries(keys), sorted(ins_values))
    if found is None:
        return find_processed(conn, keys), None, 0
    prefetched, processed_rows = found
    if prefetched.covered < len(ipps):
        count = positions[prefetched.covered]
    return processed_from(processed_rows), prefetched, count
