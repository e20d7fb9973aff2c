"""The figures of the desk's overview: messages by outcome and sender, identities by status,
messages per hour and the provisional share per week."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, case, func, select

from pamfr.store.schema import event, message, patient, webhook_cursor


def _bound(conn: Connection, moment: datetime) -> datetime:
    return moment.replace(tzinfo=None) if conn.dialect.name == "sqlite" else moment


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _kind(outcome: str, warnings: str | None) -> str:
    """AA, AA-W (applied with warnings), AE or AR."""
    return "AA-W" if outcome == "AA" and warnings else outcome


@dataclass
class Overview:
    since: datetime
    by_outcome: dict[str, int] = field(default_factory=dict)  # AA, AA-W, AE, AR
    by_sender: list[dict] = field(default_factory=list)  # sender, kind counts, last
    by_status: dict[str, int] = field(default_factory=dict)
    collisions: int = 0


def overview(conn: Connection, since: datetime) -> Overview:
    """Messages received since `since` (aware) and the identities as they are."""
    found = Overview(since)
    warned = case((message.c.warnings.is_not(None) & (message.c.warnings != ""), 1), else_=0)
    rows = conn.execute(
        select(
            message.c.sending_app,
            message.c.sending_facility,
            message.c.outcome,
            warned,
            func.count(),
            func.max(message.c.received_at),
        )
        .where(message.c.received_at >= _bound(conn, since))
        .group_by(message.c.sending_app, message.c.sending_facility, message.c.outcome, warned)
    )
    senders: dict[str, dict] = {}
    for app, facility, outcome, with_warnings, count, last in rows:
        kind = _kind(outcome, "w" if with_warnings else None)
        found.by_outcome[kind] = found.by_outcome.get(kind, 0) + count
        name = f"{app}|{facility}" if facility else app or "-"
        entry = senders.setdefault(name, {"sender": name, "last": _utc(last)})
        entry[kind] = entry.get(kind, 0) + count
        entry["last"] = max(entry["last"], _utc(last))
    found.by_sender = sorted(senders.values(), key=lambda e: e["sender"])
    for status, collision, count in conn.execute(
        select(patient.c.status, patient.c.ins_collision, func.count())
        .where(patient.c.active.is_(True))
        .group_by(patient.c.status, patient.c.ins_collision)
    ):
        found.by_status[status] = found.by_status.get(status, 0) + count
        if collision:
            found.collisions += count
    return found


def last_message_per_sender(conn: Connection) -> list[dict]:
    """Every sender ever seen, with the time of its last message (its index serves it)."""
    rows = conn.execute(
        select(
            message.c.sending_app, message.c.sending_facility, func.max(message.c.received_at)
        ).group_by(message.c.sending_app, message.c.sending_facility)
    )
    return sorted(
        (
            {"sender": f"{a}|{f}" if f else a or "-", "last": _utc(last)}
            for a, f, last in rows
            if last is not None
        ),
        key=lambda e: e["last"],
        reverse=True,
    )


def messages_per_hour(conn: Connection, now: datetime, days: int = 7) -> dict:
    """{"hours": [ISO hour...], "AA": [...], "AA-W": [...], "AE": [...], "AR": [...]} over
    the last `days` days, hour by hour (UTC)."""
    start = (now - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    hours = [start + timedelta(hours=i) for i in range(days * 24 + 1)]
    index = {h: i for i, h in enumerate(hours)}
    series = {k: [0] * len(hours) for k in ("AA", "AA-W", "AE", "AR")}
    rows = conn.execute(
        select(message.c.received_at, message.c.outcome, message.c.warnings).where(
            message.c.received_at >= _bound(conn, start)
        )
    )
    for at, outcome, warnings in rows:
        hour = _utc(at).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        kind = _kind(outcome, warnings)
        if hour in index and kind in series:
            series[kind][index[hour]] += 1
    return {"hours": [h.strftime("%m-%d %Hh") for h in hours], **series}


def provisional_share_per_week(conn: Connection, now: datetime, weeks: int = 12) -> dict:
    """{"weeks": [...], "share": [percent...]}: of the active identities created up to the
    end of each week, the share that is provisional now (a trend of the work left); None
    for a week before the first identity. One pass over the active identities."""
    ends = [now - timedelta(weeks=w) for w in range(weeks - 1, -1, -1)]
    provisional = patient.c.status == "provisoire"
    sums = []
    for end in ends:
        created = patient.c.created_at <= _bound(conn, end)
        sums.append(func.sum(case((created, 1), else_=0)))
        sums.append(func.sum(case((created & provisional, 1), else_=0)))
    row = conn.execute(select(*sums).where(patient.c.active.is_(True))).one()
    share = []
    for i in range(weeks):
        created, kept = row[2 * i] or 0, row[2 * i + 1] or 0
        share.append(round(100 * kept / created, 1) if created else None)
    return {"weeks": [e.strftime("%Y-%m-%d") for e in ends], "share": share}


def webhook_lag(conn: Connection, names: list[str]) -> list[dict]:
    """Each webhook subscriber: the events it has yet to receive and whether it is parked."""
    newest = conn.execute(select(func.max(event.c.id))).scalar() or 0
    cursors = {
        r.name: r
        for r in conn.execute(select(webhook_cursor).where(webhook_cursor.c.name.in_(names)))
    }
    found = []
    for name in names:
        cursor = cursors.get(name)
        last = cursor.last_id if cursor is not None else 0
        parked = cursor is not None and cursor.parked_at is not None
        found.append({"name": name, "behind": newest - last, "parked": parked})
    return found
