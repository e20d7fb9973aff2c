"""PostgreSQL batch strategy: a batch's leading creates and updates looked up, locked and
loaded in one round trip (with the duplicate-control look-up and ids reserved for the new
rows); their writes are held back and sent with the COMMIT (store/sink.HeldSink)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from sqlalchemy import Connection, Executable

from pamfr.identity.model import IPP_TYPE, Identifier
from pamfr.store import pgpipeline
from pamfr.store import statements as sql
from pamfr.store.messagelog import Processed, find_processed, processed_from, processed_queries


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a create or update of one patient with one IPP asks of the batch's look-ahead:
    that patient, locked and loaded, and the holders of the INS values its PID states."""

    ipp: Identifier
    ins_values: tuple[str, ...] = ()


class Ahead(Enum):
    """What another message means to the look-ahead."""

    SKIP = "skip"  # reads nothing (refused before the store): the look-ahead goes past it
    STOP = "stop"  # may change what a later message finds: the look-ahead stops before it


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
    if not pgpipeline.applies(conn):
        return None
    wanted = [(i.authority_key, i.value) for i in ipps]
    # Locked in one order (by IPP) by every receiver's prefetch; a merge locks by id, and a
    # deadlock between the two is retried. The identifiers are read once all the locks are
    # held (the statements run in order), so they are current: a patient whose IPP moved
    # meanwhile fails its re-check later.
    order = sorted(set(wanted))
    params = {key: {"k": key[0], "v": key[1], "t": IPP_TYPE} for key in order}
    inses = sorted(set(ins_values))
    # Each query tagged with what its rows say, sent in this order.
    queries: list[tuple[tuple, Executable, dict]] = [
        *((("first", n), statement, p) for n, (statement, p) in enumerate(first)),
        *((("patient", key), sql.LOAD_BY_IPP_FOR_UPDATE, params[key]) for key in order),
        *((("identifiers", key), sql.IDENTIFIERS_BY_IPP, params[key]) for key in order),
        *(
            ((name, v), statement, {"v": v})
            for v in inses
            for name, statement in (("lock", sql.LOCK_INS), ("holders", sql.ACTIVE_HOLDERS))
        ),
        (("ids",), pgpipeline.NEXT_IDS, {"patients": len(ipps), "messages": messages}),
    ]
    results = pgpipeline.read(conn, [(statement, p) for _, statement, p in queries])
    rows_of = {tag: rows for (tag, _, _), rows in zip(queries, results, strict=True)}
    first_rows = [row for n in range(len(first)) for row in rows_of["first", n]]
    ins_holders = {v: {r["id"] for r in rows_of["holders", v]} for v in inses}
    found = {key: next(iter(rows_of["patient", key]), None) for key in order}
    # A patient two of the IPPs designate comes back twice: each identifier once, in id order.
    by_id = {r["id"]: r for key in order for r in rows_of["identifiers", key]}
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
    (reserved,) = rows_of["ids",]
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
    conn: Connection,
    lookups: Sequence[Lookup | Ahead],
    keys: list[str],
    messages: int | None = None,
) -> tuple[dict[str, Processed], Prefetched | None, int]:
    """The batch's messages already processed (by duplicate-control key) and, on PostgreSQL,
    the patients of its leading creates and updates (`lookups`: what each message of the
    batch asks), looked up and locked together, and how many messages of the batch use that
    look-up and hold back their writes until the flush: those before the first message that
    could change what a later one finds (Ahead.STOP, a repeated IPP, a patient designated
    twice). All in one round trip. `messages`: how many log ids to reserve (by default one
    for each of `lookups`; 0 when an earlier look-ahead of the transaction reserved them)."""
    ipps: list[Identifier] = []
    ins_values: set[str] = set()  # whose holders the rules will ask for
    positions: list[int] = []  # of the message each IPP comes from
    seen: set[tuple[str, str]] = set()
    count = len(lookups)
    for i, lookup in enumerate(lookups):
        if lookup is Ahead.SKIP:
            continue
        key = (lookup.ipp.authority_key, lookup.ipp.value) if isinstance(lookup, Lookup) else None
        if not isinstance(lookup, Lookup) or key in seen:
            count = i
            break
        seen.add(key)
        ipps.append(lookup.ipp)
        ins_values.update(lookup.ins_values)
        positions.append(i)
    found = None
    if ipps:
        reserve = len(lookups) if messages is None else messages
        found = prefetch(conn, ipps, reserve, processed_queries(keys), sorted(ins_values))
    if found is None:
        return find_processed(conn, keys), None, 0
    prefetched, processed_rows = found
    if prefetched.covered < len(ipps):
        count = positions[prefetched.covered]
    return processed_from(processed_rows), prefetched, count
