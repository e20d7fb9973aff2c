"""The `pamfr` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path

import click

from pamfr.cli.common import (
    LOG_LEVELS,
    CommandError,
    Context,
    PamfrGroup,
    config_option,
    database_errors,
    db_option,
    open_engine,
    parse_host_port,
    safe_url,
)
from pamfr.cli.tlsopts import client_tls, tls_options
from pamfr.settings.logsetup import setup_logging
from pamfr.store.filemodes import private_umask
from pamfr.transport.codec import END_BLOCK, START_BLOCK


@click.group(cls=PamfrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pamfr", message="pamfr %(version)s")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="PAMFR_CONFIG",
    help="TOML configuration file (also PAMFR_CONFIG). See conf/pamfr.toml.",
)
@click.pass_context
def main(ctx: click.Context, config_file: str | None) -> None:
    """pamfr receives the French patient identity feed (IHE PAM FR, HL7 v2.5 ADT).

    It stores each patient's INS, the five INS traits and the identity status, with a full
    history, and answers every message with an HL7 ACK once it is durably committed.
    """
    private_umask()  # the store, its backups and locks hold health data: 0600 / 0700
    ctx.ensure_object(Context).config_file = config_file


# -- serve -------------------------------------------------------------------------------


@main.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1: local only).")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="TCP port for MLLP (default 2575; 0: any free)."
)
@db_option
@click.option("--no-migrate", is_flag=True, help="Do not upgrade the database schema on start.")
@click.option("--log-level", type=LOG_LEVELS, help="debug shows identifiers; info never does.")
@click.option(
    "--http",
    "http_listen",
    metavar="HOST:PORT",
    help="HTTP port for /healthz, /readyz and /metrics (default: [http] listen, else none).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help="json: one JSON object a line (default: [log] format, else text).",
)
@click.pass_obj
def serve(
    obj: Context,
    host: str | None,
    port: int | None,
    db_url: str | None,
    no_migrate: bool,
    log_level: str | None,
    http_listen: str | None,
    log_format: str | None,
) -> None:
    """Run the MLLP receiver until SIGTERM or SIGINT.

    Point the GAM's HL7 v2 ADT feed at HOST:PORT (MLLP). Every message is logged, applied and
    committed before its ACK is sent. On SIGTERM/SIGINT the daemon stops accepting, answers
    the messages already received, and exits 0 within [server] shutdown_grace. On SIGHUP it
    reads the configuration again and applies the allow-lists and the log level.
    TLS, mutual TLS and the allow-lists are set in [server] (see conf/pamfr.toml). With
    --http (or [http] listen), GET /healthz, /readyz and /metrics (Prometheus) answer there.
    """
    overrides = {
        "server.host": host,
        "server.port": port,
        "database.url": db_url,
        "database.migrate_on_start": False if no_migrate else None,
        "log.level": log_level,
        "http.listen": http_listen,
        "log.format": log_format,
    }
    settings = obj.settings(**overrides)
    setup_logging(settings.log.level, settings.log.format)
    from pamfr.service.daemon import run_daemon
    from pamfr.settings.config import load_settings
    from pamfr.store.db import database_url

    def reload():  # SIGHUP: the same sources again; the flags above still win
        return load_settings(obj.config_file, overrides)

    # A URL pamfr cannot use, or a store that does not answer when the schema is upgraded at
    # start, stops here in one line; once serving, an outage is answered AR 207 instead.
    with database_errors(settings):
        database_url(settings.database.url)
        code = asyncio.run(run_daemon(settings, reload, obj.config_file or ""))
    sys.exit(code)


# -- db ----------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema management (Alembic migrations)."""


@db.command("upgrade")
@db_option
@click.option(
    "--revision",
    default="head",
    show_default=True,
    help="Target revision (e.g. 0002); never below the current one (no downgrade).",
)
@click.pass_obj
def db_upgrade(obj: Context, db_url: str | None, revision: str) -> None:
    """Create or upgrade the schema of the database to the latest revision (or --revision),
    then print the revision the database is really at."""
    settings = obj.settings(**{"database.url": db_url})
    setup_logging("warning")
    from pamfr.store.db import SchemaError, current_revision, upgrade

    url = settings.database.url
    with database_errors(settings):
        try:
            upgrade(url, revision)
        except SchemaError as exc:
            raise CommandError(f"--revision: {exc}") from None
        now = current_revision(url)
    click.echo(f"database schema at {now}: {safe_url(url)}")


# -- messages ----------------------------------------------------------------------------


class Moment(click.ParamType):
    """An ISO 8601 time (with its offset, else local time) or a date (local midnight; as an
    upper bound, the end of that day)."""

    name = "TIME"

    def __init__(self, end_of_day: bool = False) -> None:
        self.end_of_day = end_of_day

    def convert(self, value, param, ctx) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            self.fail(
                f"{value!r} is not an ISO time or date (2026-12-04, 2026-12-04T10:30, "
                "2026-12-04T10:30+01:00)",
                param,
                ctx,
            )
        if self.end_of_day and len(value.strip()) == 10:
            moment += timedelta(days=1)
        return moment.astimezone()  # a time without an offset is local time


def _sender(ctx, param, value: str | None) -> tuple[str, str | None] | None:
    if value is None:
        return None
    app, sep, facility = value.partition("|")
    if not app or "|" in facility or (sep and not facility):
        raise click.BadParameter(f"expected APPLICATION or APPLICATION|FACILITY, got {value!r}")
    return app, facility if sep else None


def _err_code(ctx, param, value: str | None) -> str | None:
    if value is not None and not (value.isascii() and value.isdigit()):
        raise click.BadParameter(f"expected an HL7 error code (table 0357: 204...), got {value!r}")
    return value


def _decoded(raw: bytes, charset: str) -> str:
    """A stored message as text, in the character set its own MSH-18 names."""
    from pamfr.hl7.charset import stored_text

    return stored_text(raw, charset)


@main.command()
@db_option
@click.option("--outcome", type=click.Choice(["AA", "AE", "AR"]), help="Only this outcome.")
@click.option("--since", type=Moment(), help="Received at or after TIME (ISO time or date).")
@click.option(
    "--until", type=Moment(end_of_day=True), help="Received before TIME (a date: that day too)."
)
@click.option(
    "--sender",
    metavar="APP[|FACILITY]",
    callback=_sender,
    help="MSH-3 (and MSH-4) as received, first component.",
)
@click.option("--control-id", metavar="ID", help="MSH-10 as received.")
@click.option(
    "--ipp",
    help="Messages that changed the patient holding this IPP (its history rows); "
    "a message refused (AE/AR) changed nobody: find it by --control-id.",
)
@click.option(
    "--err-code", metavar="N", callback=_err_code, help="Messages whose ACK carries ERR code N."
)
@click.option("--warnings", is_flag=True, help="Messages applied (AA) with warnings.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Rows at most."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message, as a list.")
@click.option(
    "--show-content",
    is_flag=True,
    help="Include the raw message and the ACK, decoded by MSH-18 (patient data!).",
)
@click.pass_obj
def messages(
    obj: Context,
    db_url: str | None,
    outcome: str | None,
    since: datetime | None,
    until: datetime | None,
    sender: tuple[str, str | None] | None,
    control_id: str | None,
    ipp: str | None,
    err_code: str | None,
    warnings: bool,
    limit: int,
    as_json: bool,
    show_content: bool,
) -> None:
    """The message log, newest first, without patient data unless --show-content.

    Times are UTC, with their offset. Filters combine (all must hold).
    """
    settings = obj.settings(reading=True, **{"database.url": db_url})
    from pamfr.store.readside import MessageFilter, iso, message_log

    selected = MessageFilter(
        outcome=outcome,
        since=since,
        until=until,
        sending_app=sender[0] if sender else None,
        sending_facility=sender[1] if sender else None,
        control_id=control_id,
        ipp=ipp,
        err_code=err_code,
        warnings=warnings,
        limit=limit,
    )
    engine = open_engine(settings, read_only=True)
    try:
        with database_errors(settings), engine.connect() as conn:
            rows = message_log(conn, selected)
    finally:
        engine.dispose()
    out = []
    for r in rows:
        item = {
            "id": r["id"],
            "received_at": iso(r["received_at"]) if r["received_at"] else None,
            "door": r["door"],
            "peer": r["peer"],
            "sending_app": r["sending_app"],
            "sending_facility": r["sending_facility"],
            "control_id": r["control_id"],
            "event": r["event"],
            "outcome": r["outcome"],
            "duplicate_of": r["duplicate_of"],
            "err_codes": r["err_codes"].split() if r["err_codes"] else [],
            "error": r["error_text"],
            "warnings": r["warnings"] or None,
            "size": r["raw_size"],
        }
        if show_content:
            item["charset"] = r["charset"]
            item["raw"] = _decoded(r["raw"], r["charset"])
            item["ack"] = _decoded(r["ack"] or b"", r["charset"])
        out.append(item)
    if as_json:
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    click.echo(
        f"{'ID':>7} {'RECEIVED':<32} {'DOOR':<6} {'PEER':<21} SENDER CONTROL-ID EVENT OUTCOME "
        "[ERR] [DETAIL]"
    )
    for item in out:
        dup = f" duplicate of {item['duplicate_of']}" if item["duplicate_of"] else ""
        codes = f" ERR {','.join(item['err_codes'])}" if item["err_codes"] else ""
        err = f"  {item['error']}" if item["error"] else ""
        warn = f"  warnings: {item['warnings']}" if item["warnings"] else ""
        click.echo(
            f"{item['id']:>7} {item['received_at']:<32} {item['door']:<6} "
            f"{item['peer'] or '-':<21} "
            f"{item['sending_app'] or '-'}|{item['sending_facility'] or '-'} "
            f"{item['control_id'] or '-'} {item['event'] or '-'} {item['outcome']}"
            f"{dup}{codes}{err}{warn}"
        )
        if show_content:
            click.echo("    " + item["raw"].replace("\r", "\n    ").rstrip())


# -- send --------------------------------------------------------------------------------


@main.command()
@config_option
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--to", "target", required=True, metavar="HOST:PORT", help="MLLP receiver.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds per ACK.")
@tls_options
def send(
    files: tuple[str, ...],
    target: str,
    timeout: float,
    tls: bool,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Send the messages of FILES over MLLP, one by one, and print each ACK.

    A file may hold one message, several, an HL7 batch or MLLP frames; LF, CR or CRLF.
    Exit status 0 when every ACK is AA (or CA), 1 otherwise, 2 when nothing could be sent
    (an unreadable file, a receiver that does not take the connection).
    """
    from pamfr.ingest.files import UnreadableFile, split_messages
    from pamfr.ingest.sender import CannotConnect, ack_summary, send_messages
    from pamfr.transport.client import MLLPError

    host, port = parse_host_port(target)
    context = client_tls(tls, tls_ca, tls_cert, tls_key)
    batches: list[tuple[str, list[bytes]]] = []
    for f in files:
        data = Path(f).read_bytes()
        if START_BLOCK in data and END_BLOCK not in data:
            raise CommandError(
                f"{f}: an MLLP frame starts (0x0B) but never ends (no 0x1C 0x0D end block): "
                "the file is cut, or was written without its end block; nothing sent"
            )
        try:
            batches.append((f, split_messages(data)))
        except UnreadableFile as exc:
            raise CommandError(f"{f}: {exc}; nothing sent") from None
    all_ok = True
    for n, (name, msgs) in enumerate(batches):
        try:
            acks = asyncio.run(send_messages(host, port, msgs, timeout=timeout, ssl=context))
        except CannotConnect as exc:
            done = "nothing sent" if n == 0 else f"nothing sent of {name} and after"
            raise CommandError(f"{exc}: {done}") from None
        except (OSError, MLLPError) as exc:
            raise click.ClickException(f"no ACK from {host}:{port}: {exc}") from None
        for i, ack in enumerate(acks, 1):
            code, errors = ack_summary(ack)
            all_ok &= code in ("AA", "CA")
            click.echo(f"{name} #{i}: {code}" + "".join(f"\n    ERR {e}" for e in errors))
    sys.exit(0 if all_ok else 1)


from pamfr.cli.api import api  # noqa: E402
from pamfr.cli.events import events  # noqa: E402
from pamfr.cli.ingest import generate, replay, watch  # noqa: E402
from pamfr.cli.keep import db_backup, purge, reprocess  # noqa: E402
from pamfr.cli.patient import patient  # noqa: E402
from pamfr.cli.status import status  # noqa: E402

for command in (patient, watch, replay, generate, status, reprocess, purge, api, events):
    main.add_command(command)
db.add_command(db_backup)
