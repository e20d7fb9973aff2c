"""`pamfr events`: the change feed as GET /events gives it, and the webhook subscribers."""

from __future__ import annotations

import json
import sys
import time

import click

from pamfr.cli.common import CommandError, Context, database_errors, db_option, open_engine


def _line(e: dict) -> str:
    other = e["other_patient_id"] if e["other_patient_id"] is not None else "-"
    detail = json.dumps(e["detail"], ensure_ascii=False, sort_keys=True) if e["detail"] else ""
    return (
        f"{e['id']:>8} {e['at']:<32} {e['type']:<27} {e['patient_id']:>8} {other:>8} "
        f"{e['message_id']:>8} {e['control_id'] or '-'} {detail}".rstrip()
    )


HEADER = f"{'ID':>8} {'AT':<32} {'TYPE':<27} {'PATIENT':>8} {'OTHER':>8} {'MESSAGE':>8} CONTROL-ID"


@click.command()
@db_option
@click.option(
    "--after",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Events after this id (the last one a consumer has seen).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Events at most (with --follow: per poll).",
)
@click.option("--follow", is_flag=True, help="Keep printing new events until interrupted.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="Seconds between polls with --follow.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line, as GET /events.")
@click.option("--failed", is_flag=True, help="List the parked webhook subscribers.")
@click.option("--retry", metavar="SUBSCRIBER", help="Unpark a webhook subscriber.")
@click.pass_obj
def events(
    obj: Context,
    db_url: str | None,
    after: int,
    limit: int,
    follow: bool,
    interval: float,
    as_json: bool,
    failed: bool,
    retry: str | None,
) -> None:
    """The change feed: identity events in order, resumable from any id (--after).

    Each event names its patient (internal id), the message that made it and the patient's
    version; identifiers and codes only, no names. With --failed, the webhook subscribers
    parked after too many failures; --retry SUBSCRIBER starts delivering to it again, from
    where it stopped.
    """
    if sum((failed, retry is not None, follow)) > 1:
        raise click.UsageError("--failed, --retry and --follow go alone")
    settings = obj.settings(reading=retry is None, **{"database.url": db_url})
    from pamfr.feed.store import all_cursors, read_events, unpark

    if retry is not None:
        engine = open_engine(settings)
        try:
            with database_errors(settings), engine.begin() as conn:
                found = unpark(conn, retry)
        finally:
            engine.dispose()
        if not found:
            raise CommandError(f"--retry: no webhook subscriber named {retry!r} in the store")
        click.echo(f"{retry}: unparked, deliveries resume from its cursor")
        return
    engine = open_engine(settings, read_only=True)
    try:
        if failed:
            with database_errors(settings), engine.connect() as conn:
                parked = [c for c in all_cursors(conn) if c.parked]
            if as_json:
                click.echo(json.dumps([c.as_json() for c in parked], indent=2))
            else:
                click.echo(f"{len(parked)} parked subscriber(s)")
                for c in parked:
                    j = c.as_json()
                    click.echo(
                        f"  {c.name}: parked at {j['parked_at']} after {c.failures} failures, "
                        f"delivered up to {c.last_id}; last error: {c.last_error or '-'}"
                    )
            return
        if not as_json:
            click.echo(HEADER)
        try:
            while True:
                with database_errors(settings), engine.connect() as conn:
                    page = read_events(conn, after, limit)
                for e in page:
                    click.echo(json.dumps(e, ensure_ascii=False) if as_json else _line(e))
                if page:
                    after = page[-1]["id"]
                if not follow:
                    break
                sys.stdout.flush()
                if len(page) < limit:
                    time.sleep(interval)
        except KeyboardInterrupt:
            return
    finally:
        engine.dispose()
