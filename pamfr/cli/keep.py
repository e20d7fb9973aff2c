"""Keeping what was received: reprocess, purge (retention), db backup."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from pamfr.cli.common import Context, db_option, open_engine, safe_url
from pamfr.settings.config import Settings
from pamfr.settings.logsetup import setup_logging


class Refused(click.ClickException):
    """One line on stderr, exit status 2 (bad argument, nothing done)."""

    exit_code = 2


@contextmanager
def _store(settings: Settings):
    """The engine of an existing store: reading never creates a SQLite file; a database
    that cannot be reached is one line, not a traceback."""
    url = settings.database.url
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise Refused(f"--db / database.url: not a database URL: {url!r}") from None
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "").expanduser()
        if not parsed.database or not path.is_file():
            raise Refused(f"--db: no SQLite store at {path}")
    engine = open_engine(settings)
    try:
        yield engine
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None) or exc
        first = (str(orig).splitlines() or [""])[0]
        raise Refused(f"database {safe_url(url)}: {type(orig).__name__}: {first}") from None
    finally:
        engine.dispose()


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Refused(
            f"--since: expected a date or time like 2026-03-28 or 2026-03-28T14:00, got {value!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- reprocess ---------------------------------------------------------------------------


@click.command()
@click.option(
    "--outcome",
    required=True,
    type=click.Choice(["AE", "AR"]),
    help="Run again the messages that were answered this.",
)
@click.option("--since", metavar="T", help="Only those received at or after T (ISO, UTC).")
@click.option("--control-id", metavar="ID", help="Only the message(s) with this MSH-10.")
@click.option("--dry-run", is_flag=True, help="List what would be run again; change nothing.")
@db_option
@click.pass_obj
def reprocess(
    obj: Context,
    outcome: str,
    since: str | None,
    control_id: str | None,
    dry_run: bool,
    db_url: str | None,
) -> None:
    """Run stored messages through the receiver again, after a configuration or code fix.

    Each becomes a new log entry linked to the original (door "reprocess"), with the rules
    and the configuration as they are now ([receiver] processing_ids, [server]
    allowed_senders). A message is applied only if the one logged under its control id was
    not answered AA; a new AA or AE answers the GAM's later resends. Messages whose raw was
    purged (retention) cannot be run again and are listed.
    """
    settings = obj.settings(**{"database.url": db_url})
    moment = _since(since)
    setup_logging(settings.log.level if not dry_run else "warning", settings.log.format)
    from pamfr.path.receiver import Receiver
    from pamfr.path.reprocess import candidates
    from pamfr.path.reprocess import reprocess as run

    with _store(settings) as engine:
        with engine.connect() as conn:
            rows = list(candidates(conn, outcome, since=moment, control_id=control_id))
        ready = [c for c in rows if c.cannot is None]
        if dry_run:
            for c in rows:
                note = f"  cannot: {c.cannot}" if c.cannot else f"  {c.error_text or ''}"
                at = c.received_at if c.received_at.tzinfo else c.received_at.replace(tzinfo=UTC)
                click.echo(
                    f"{c.id:>7} {at.isoformat(timespec='seconds')} {c.door:<6} "
                    f"{c.control_id or '-'} {c.event or '-'} {c.outcome}{note.rstrip()}"
                )
            click.echo(
                f"dry run: {len(ready)} message(s) would be reprocessed, "
                f"{len(rows) - len(ready)} cannot be"
            )
            return
        receiver = Receiver(
            engine,
            processing_ids=settings.receiver.processing_ids,
            allowed_senders=settings.server.allowed_senders,
        )
        result = run(receiver, rows)
    for c in result.cannot:
        click.echo(f"{c.id:>7} {c.control_id or '-'} cannot be reprocessed: {c.cannot}")
    counts = ", ".join(f"{code} {n}" for code, n in sorted(result.by_outcome.items()))
    click.echo(
        f"reprocessed {sum(result.by_outcome.values())} message(s) answered {outcome}"
        f"{': ' + counts if counts else ''}; {len(result.cannot)} could not be (raw gone)"
    )


# -- purge -------------------------------------------------------------------------------


@click.command()
@click.option(
    "--older-than",
    "days",
    type=click.IntRange(min=1),
    metavar="DAYS",
    help="Age in days (default: [retention] raw_messages_days).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be purged; change nothing.")
@db_option
@click.pass_obj
def purge(obj: Context, days: int | None, dry_run: bool, db_url: str | None) -> None:
    """Empty the raw bytes of old messages (health data), keeping their log rows.

    Every message received more than DAYS days ago, whatever its outcome. The control id,
    outcome, ERR text, ACK and the patient history stay; `pamfr reprocess` can no longer run
    a purged message. With [retention] merged_history_days, the history of patients merged
    away that long ago is deleted too.
    """
    settings = obj.settings(**{"database.url": db_url})
    days = days or settings.retention.raw_messages_days
    if days is None:
        raise Refused("purge: give --older-than DAYS or set [retention] raw_messages_days")
    setup_logging(settings.log.level, settings.log.format)
    from pamfr.store.retention import purge_merged_history, purge_raw

    history_days = settings.retention.merged_history_days
    with _store(settings) as engine:
        result = purge_raw(engine, days, dry_run=dry_run)
        merged = None
        if history_days is not None:
            merged = purge_merged_history(engine, history_days, dry_run=dry_run)
    verb = "would be purged" if dry_run else "purged"
    dry = "dry run: " if dry_run else ""
    click.echo(
        f"{dry}raw bytes of {result.purged} message(s) received "
        f"before {result.cutoff:%Y-%m-%d %H:%M} UTC {verb} ({result.bytes} bytes)"
    )
    if merged is not None:
        click.echo(
            f"{dry}{merged.rows} history row(s) of {merged.patients} patient(s) merged away "
            f"before {merged.cutoff:%Y-%m-%d %H:%M} UTC {verb}"
        )


# -- db backup ---------------------------------------------------------------------------


@click.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@db_option
@click.pass_obj
def db_backup(obj: Context, file: Path, db_url: str | None) -> None:
    """Copy a live SQLite store to FILE, consistently (SQLite's online backup API).

    The daemon may keep running. FILE must not exist. For PostgreSQL use pg_dump -Fc.
    """
    settings = obj.settings(reading=True, **{"database.url": db_url})
    from pamfr.store.backup import BackupRefused, backup_sqlite

    try:
        size = backup_sqlite(settings.database.url, file)
    except BackupRefused as exc:
        raise Refused(str(exc)) from None
    click.echo(f"backup of {safe_url(settings.database.url)} written to {file} ({size} bytes)")
