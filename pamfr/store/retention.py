"""Retention: empty the raw bytes of old messages, keep their log rows; on request, delete
the history of patients merged away long ago.

A purged message row keeps its control id, outcome, ERR text, ACK and size, and every history
row that points at it; only `raw` becomes empty and `raw_purged_at` says when. Every outcome
is purged once old enough, AR included: a GAM resends an AR within minutes, and a frame
refused from any peer is not kept for ever (it was cut to its first 4 KiB when stored).

On SQLite the store runs with secure_delete (freed bytes are zeroed), and a purge ends with a
WAL checkpoint that truncates the WAL, so the old bytes are in no file pamfr keeps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, delete, func, select, update

from pamfr.store.schema import history, message, patient

log = logging.getLogger("pamfr.retention")


@dataclass(frozen=True, slots=True)
class PurgeResult:
    cutoff: datetime
    purged: int  # raw messages emptied (or, in a dry run, that would be)
    bytes: int  # raw bytes freed


@dataclass(frozen=True, slots=True)
class HistoryPurgeResult:
    cutoff: datetime
    rows: int  # history rows deleted (or, in a dry run, that would be)
    patients: int  # merged-away patients they were of


def purge_raw(
    engine: Engine,
    older_than_days: int,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    chunk: int = 500,
) -> PurgeResult:
    """Empty the raw bytes of the messages received more than `older_than_days` ago, a
    chunk of rows a transaction so that the receiver's writes are never held up for long."""
    if older_than_days < 1:
        raise ValueError("older_than_days must be at least 1")
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=older_than_days)
    old = and_(message.c.received_at < cutoff, message.c.raw_purged_at.is_(None))
    with engine.connect() as conn:
        ids = list(conn.execute(select(message.c.id).where(old)).scalars())
    freed = 0
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        with engine.connect() if dry_run else engine.begin() as conn:
            freed += conn.execute(
                select(func.coalesce(func.sum(func.length(message.c.raw)), 0)).where(
                    message.c.id.in_(part), message.c.raw_purged_at.is_(None)
                )
            ).scalar_one()
            if not dry_run:
                conn.execute(
                    update(message)
                    .where(message.c.id.in_(part), message.c.raw_purged_at.is_(None))
                    .values(raw=b"", raw_purged_at=now)
                )
    result = PurgeResult(cutoff, len(ids), int(freed))
    if not dry_run:
        checkpoint(engine)
        log.info(
            "retention: raw bytes of %d message(s) received before %s purged (%d bytes)",
            result.purged,
            cutoff.isoformat(timespec="seconds"),
            result.bytes,
        )
    return result


def purge_merged_history(
    engine: Engine, older_than_days: int, *, dry_run: bool = False, now: datetime | None = None
) -> HistoryPurgeResult:
    """Delete the history rows of patients merged into another one whose latest history row
    is more than `older_than_days` old: the survivor keeps its own history, the merged-away
    record its current row (which points at the survivor)."""
    if older_than_days < 1:
        raise ValueError("older_than_days must be at least 1")
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=older_than_days)
    latest = (
        select(history.c.patient_id)
        .join(patient, patient.c.id == history.c.patient_id)
        .where(patient.c.merged_into.is_not(None))
        .group_by(history.c.patient_id)
        .having(func.max(history.c.at) < cutoff)
    )
    with engine.connect() if dry_run else engine.begin() as conn:
        ids = list(conn.execute(latest).scalars())
        rows = 0
        if ids:
            counted = select(func.count()).where(history.c.patient_id.in_(ids))
            rows = conn.execute(counted).scalar_one()
            if not dry_run:
                conn.execute(delete(history).where(history.c.patient_id.in_(ids)))
    result = HistoryPurgeResult(cutoff, int(rows), len(ids))
    if not dry_run:
        checkpoint(engine)
        log.info(
            "retention: %d history row(s) of %d patient(s) merged away before %s deleted",
            result.rows,
            result.patients,
            cutoff.isoformat(timespec="seconds"),
        )
    return result


def checkpoint(engine: Engine) -> None:
    """SQLite: copy the WAL into the database file and truncate it, so that the pages a purge
    overwrote are in no file any longer. PostgreSQL reclaims them by its own (auto)vacuum."""
    if engine.dialect.name != "sqlite":
        return
    raw = engine.raw_connection()  # outside any transaction: a checkpoint cannot run in one
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.close()
    finally:
        raw.close()
