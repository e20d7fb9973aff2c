"""Retention of raw messages: empty the raw bytes of old final messages, keep the log row.

A purged row keeps its control id, outcome, ERR text, ACK and size, and every history row
that points at it; only `raw` becomes empty and `raw_purged_at` says when. A message is
purged only when its outcome is final: AA or AE, or an AR that a reprocess has since
answered AA or AE (an AR invites a resend, and its raw is what a reprocess runs again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, exists, func, or_, select, update
from sqlalchemy.orm import aliased

from pamfr.store.schema import message

log = logging.getLogger("pamfr.retention")

_later = aliased(message)


@dataclass(frozen=True, slots=True)
class PurgeResult:
    cutoff: datetime
    purged: int  # raw messages emptied (or, in a dry run, that would be)
    kept_not_final: int  # older than the cutoff but not final: kept
    bytes: int  # raw bytes freed


def _final():
    reprocessed_final = exists().where(
        and_(_later.c.reprocess_of == message.c.id, _later.c.outcome.in_(("AA", "AE")))
    )
    return or_(message.c.outcome.in_(("AA", "AE")), reprocessed_final)


def purge_raw(
    engine: Engine,
    older_than_days: int,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    chunk: int = 500,
) -> PurgeResult:
    """Empty the raw bytes of final messages received more than `older_than_days` ago, a
    chunk of rows a transaction so that the receiver's writes are never held up for long."""
    if older_than_days < 1:
        raise ValueError("older_than_days must be at least 1")
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=older_than_days)
    old = and_(message.c.received_at < cutoff, message.c.raw_purged_at.is_(None))
    with engine.connect() as conn:
        ids = list(conn.execute(select(message.c.id).where(old, _final())).scalars())
        kept = conn.execute(select(func.count()).where(old, ~_final())).scalar_one()
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
    result = PurgeResult(cutoff, len(ids), int(kept), int(freed))
    if not dry_run:
        log.info(
            "retention: raw bytes of %d message(s) received before %s purged (%d bytes); "
            "%d older message(s) kept, not final",
            result.purged,
            cutoff.isoformat(timespec="seconds"),
            result.bytes,
            result.kept_not_final,
        )
    return result
