"""The `pamfr` command line."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from pamfr.cli.common import (
    LOG_LEVELS,
    Context,
    db_option,
    open_engine,
    parse_host_port,
    safe_url,
)
from pamfr.cli.tlsopts import client_tls, tls_options
from pamfr.logsetup import setup_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    ctx.obj = Context(config_file)


# -- serve -------------------------------------------------------------------------------


@main.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1: local only).")
@click.option("--port", type=int, help="TCP port for MLLP (default 2575).")
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
    help="json: one JSON object a line (default: [logging] format, else text).",
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
        "logging.level": log_level,
        "http.listen": http_listen,
        "logging.format": log_format,
    }
    settings = obj.settings(**overrides)
    setup_logging(settings.logging.level, settings.logging.format)
    from pamfr.config import load_settings
    from pamfr.daemon import run_daemon

    def reload():  # SIGHUP: the same sources again; the flags above still win
        return load_settings(obj.config_file, overrides)

    sys.exit(asyncio.run(run_daemon(settings, reload, obj.config_file or "")))


# -- db ----------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema management (Alembic migrations)."""


@db.command("upgrade")
@db_option
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.pass_obj
def db_upgrade(obj: Context, db_url: str | None, revision: str) -> None:
    """Create or upgrade the schema of the database to the latest revision."""
    settings = obj.settings(**{"database.url": db_url})
    setup_logging("warning")
    from pamfr.store.db import upgrade

    upgrade(settings.database.url, revision)
    click.echo(f"database schema at {revision}: {safe_url(settings.database.url)}")


# -- messages ----------------------------------------------------------------------------


@main.command()
@db_option
@click.option("--outcome", type=click.Choice(["AA", "AE", "AR"]), help="Only this outcome.")
@click.option(
    "--warnings",
    "warnings_only",
    is_flag=True,
    help="Only messages answered with warnings (ERR severity W: applied, but not fully).",
)
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message, as a list.")
@click.option("--show-content", is_flag=True, help="Include the raw message (patient data!).")
@click.pass_obj
def messages(
    obj: Context,
    db_url: str | None,
    outcome: str | None,
    warnings_only: bool,
    limit: int,
    as_json: bool,
    show_content: bool,
) -> None:
    """The message log, newest first, without patient data unless --show-content."""
    settings = obj.settings(**{"database.url": db_url})
    from pamfr.store.messagelog import list_messages

    with open_engine(settings).connect() as conn:
        rows = list_messages(conn, outcome=outcome, limit=limit, warnings_only=warnings_only)
    out = []
    for r in rows:
        item = {
            "id": r["id"],
            "received_at": r["received_at"].isoformat() if r["received_at"] else None,
            "door": r["door"],
            "peer": r["peer"],
            "sending_app": r["sending_app"],
            "sending_facility": r["sending_facility"],
            "control_id": r["control_id"],
            "event": r["event"],
            "outcome": r["outcome"],
            "duplicate_of": r["duplicate_of"],
            "error": r["error_text"],
            "warnings": r["warnings"],
            "size": r["raw_size"],
        }
        if show_content:
            item["raw"] = r["raw"].decode("utf-8", errors="replace")
            item["ack"] = (r["ack"] or b"").decode("utf-8", errors="replace")
        out.append(item)
    if as_json:
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
        return
    for item in out:
        dup = f" duplicate of {item['duplicate_of']}" if item["duplicate_of"] else ""
        err = f"  {item['error']}" if item["error"] else ""
        err += f"  warnings: {item['warnings']}" if item["warnings"] else ""
        click.echo(
            f"{item['id']:>7} {item['received_at']} {item['door']:<6} {item['peer'] or '-':<21} "
            f"{item['sending_app'] or '-'}/{item['sending_facility'] or '-'} "
            f"{item['control_id'] or '-'} {item['event'] or '-'} {item['outcome']}{dup}{err}"
        )
        if show_content:
            click.echo("    " + item["raw"].replace("\r", "\n    "))


# -- send --------------------------------------------------------------------------------


@main.command()
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
    Exit status 0 when every ACK is AA (or CA), 1 otherwise.
    """
    from pamfr.ingest.files import UnreadableFile, split_messages
    from pamfr.ingest.sender import ack_summary, send_messages
    from pamfr.transport.client import MLLPError

    host, port = parse_host_port(target)
    context = client_tls(tls, tls_ca, tls_cert, tls_key)
    batches: list[tuple[str, list[bytes]]] = []
    for f in files:
        try:
            batches.append((f, split_messages(Path(f).read_bytes())))
        except UnreadableFile as exc:
            raise click.ClickException(f"{f}: {exc}") from None
    all_ok = True
    for name, msgs in batches:
        try:
            acks = asyncio.run(send_messages(host, port, msgs, timeout=timeout, ssl=context))
        except (OSError, MLLPError) as exc:
            raise click.ClickException(f"no ACK from {host}:{port}: {exc}") from None
        for i, ack in enumerate(acks, 1):
            code, errors = ack_summary(ack)
            all_ok &= code in ("AA", "CA")
            click.echo(f"{name} #{i}: {code}" + "".join(f"\n    ERR {e}" for e in errors))
    sys.exit(0 if all_ok else 1)


from pamfr.cli.ingest import generate, replay, watch  # noqa: E402
from pamfr.cli.keep import db_backup, purge, reprocess  # noqa: E402
from pamfr.cli.patient import patient  # noqa: E402
from pamfr.cli.status import status  # noqa: E402

for command in (patient, watch, replay, generate, status, reprocess, purge):
    main.add_command(command)
db.add_command(db_backup)
