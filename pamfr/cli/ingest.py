"""`pamfr watch`, `pamfr replay` and `pamfr generate`: the file-drop and replay doors."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path

import click

from pamfr.cli.common import (
    LOG_LEVELS,
    CommandError,
    Context,
    config_option,
    database_errors,
    db_option,
    open_engine,
    parse_host_port,
    safe_url,
)
from pamfr.cli.tlsopts import client_tls, tls_options
from pamfr.hl7.frame import Door
from pamfr.settings.config import Settings
from pamfr.settings.logsetup import setup_logging

log = logging.getLogger("pamfr.watch")

# -- watch ---------------------------------------------------------------------------------


@click.command()
@click.argument("dirs", nargs=-1, type=click.Path(exists=True, file_okay=False))
@db_option
@click.option(
    "--quiet-period",
    type=click.FloatRange(min=0),
    help="Seconds a file must stay unchanged (default 2).",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.01),
    help="Seconds between two looks (default 1).",
)
@click.option(
    "--once", is_flag=True, help="Take what is ready now (within one quiet period) and exit."
)
@click.option("--no-migrate", is_flag=True, help="Do not upgrade the database schema on start.")
@click.option("--log-level", type=LOG_LEVELS, help="debug shows identifiers; info never does.")
@click.pass_obj
def watch(
    obj: Context,
    dirs: tuple[str, ...],
    db_url: str | None,
    quiet_period: float | None,
    poll_interval: float | None,
    once: bool,
    no_migrate: bool,
    log_level: str | None,
) -> None:
    """Watch inbound folders (DIRS, else [filedrop] dirs) for dropped HL7 files.

    A file is taken once it has not changed for the quiet period, its content is complete
    and, where inotify works, its writer has closed it (README: file drop); names ending in
    .tmp/.part/.filepart and dot-files are left alone. Its messages go through the receiver
    one by one, in order; then it moves to done/ (all AA) or error/ (any AE/AR, or
    unreadable) with <name>.ack (the ACKs, one per message) or <name>.error (why).
    Runs until SIGTERM/SIGINT (the message in hand is finished, the file stays in its inbox).
    With --once: exit 0 when every file taken went to done/, 1 otherwise.
    """
    settings = obj.settings(
        **{
            "database.url": db_url,
            "database.migrate_on_start": False if no_migrate else None,
            "filedrop.dirs": list(dirs) or None,
            "filedrop.quiet_period": quiet_period,
            "filedrop.poll_interval": poll_interval,
            "log.level": log_level,
        }
    )
    if not settings.filedrop.dirs:
        raise click.UsageError("no folder to watch: give DIRS or set [filedrop] dirs")
    setup_logging(settings.log.level, settings.log.format)
    with database_errors(settings):
        code = asyncio.run(_watch(settings, once))
    sys.exit(code)


async def _watch(settings: Settings, once: bool) -> int:
    from pamfr.ingest.filedrop import FileDropWatcher
    from pamfr.path.assemble import build_receiver
    from pamfr.path.pipeline import AsyncReceiver

    if settings.database.migrate_on_start:
        from pamfr.store.db import upgrade

        await asyncio.to_thread(upgrade, settings.database.url)
    engine = open_engine(settings)
    receiver = build_receiver(engine, settings)
    # A folder's messages go one at a time: parse processes help only with several folders.
    folders = len(settings.filedrop.dirs)
    handler = AsyncReceiver(
        receiver,
        batch_max=settings.receiver.batch_max,
        parse_workers=min(settings.receiver.parse_workers, folders) if folders > 1 else 0,
        door=Door.FILE,
    )
    await handler.start()
    watcher = FileDropWatcher(
        handler, settings.filedrop, max_message_size=settings.server.max_frame_size
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, watcher.stop)
    try:
        if once:
            results = await watcher.run_once()
            return 0 if all(r.ok for r in results) and not watcher.failures else 1
        log.info(
            "watching %s for dropped files, database %s",
            ", ".join(settings.filedrop.dirs),
            safe_url(settings.database.url),
        )
        await watcher.run()
        return 0
    finally:
        await asyncio.to_thread(handler.close)
        engine.dispose()


# -- replay --------------------------------------------------------------------------------


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--to", "target", metavar="HOST:PORT", help="Send over MLLP to this receiver.")
@click.option("--local", is_flag=True, help="Apply directly to the store (--db), no network.")
@db_option
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds per ACK.")
@click.option(
    "--connections",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="--to: connections sending in parallel. The messages of one patient (same PID-3 or "
    "MRG-1 identifier) keep the order of the files: each is sent after the ACK of the one "
    "before it; other patients' messages go meanwhile.",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    default=2,
    show_default=True,
    help="--local: parsing processes (0: parse and commit each message on its own).",
)
@click.option(
    "--report", type=click.Path(dir_okay=False, path_type=Path), help="Write the summary as JSON."
)
@click.option(
    "--expect",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Compare the final store with this JSON list of `patient show --json` objects.",
)
@click.option(
    "--write-expect",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the final store in that shape (to make an --expect file).",
)
@click.option("--allow-errors", is_flag=True, help="Exit 0 even when some ACKs are not AA.")
@click.option("--rewrite-control-ids", is_flag=True, help="A fresh MSH-10 for every message.")
@click.option("--no-migrate", is_flag=True, help="--local: do not upgrade the schema first.")
@click.option("--log-level", type=LOG_LEVELS, help="Default warning (info: a line per message).")
@tls_options
@click.pass_obj
def replay(
    obj: Context,
    paths: tuple[Path, ...],
    target: str | None,
    local: bool,
    db_url: str | None,
    timeout: float,
    connections: int,
    workers: int,
    report: Path | None,
    expect: Path | None,
    write_expect: Path | None,
    allow_errors: bool,
    rewrite_control_ids: bool,
    no_migrate: bool,
    log_level: str | None,
    tls: bool,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Replay message files: PATHS are files or folders (walked recursively, sorted; inside
    folders, dot-files and the .ack/.error files of the file drop are skipped).

    Same file formats as the file drop. --to sends each message over MLLP and waits for its
    ACK (no ACK in time or a lost connection: resent once on a new connection, then the rest
    of that file is not sent; a receiver that refuses the first connection: exit 2, nothing
    sent); with --connections N, the messages of one patient keep their order across files.
    --local applies them to the store through the receiver (the fast path). --tls and --tls-*
    make --to use MLLP over TLS. --expect and --write-expect read the store given by --db
    (with --to: the receiver's store).
    Prints a summary (counts by ACK code, event and ERR code, rate, the messages not AA).
    Exit 0 when every message got AA (or --allow-errors) and the --expect state matches,
    1 otherwise.
    """
    from pamfr.ingest import expected as ex
    from pamfr.ingest import messagesets as ms
    from pamfr.ingest import replay as rp
    from pamfr.ingest.report import Progress, Summary

    if local == (target is not None):
        raise click.UsageError("give exactly one of --to HOST:PORT or --local")
    context = client_tls(tls, tls_ca, tls_cert, tls_key)
    if local and context is not None:
        raise click.UsageError("--tls and --tls-* go with --to, not --local")
    settings = obj.settings(
        **{
            "database.url": db_url,
            "database.migrate_on_start": False if no_migrate else None,
            "log.level": log_level or "warning",
        }
    )
    setup_logging(settings.log.level, settings.log.format)
    expected = None
    if expect is not None:
        try:
            expected = ex.load_expected(expect)
        except ValueError as exc:
            raise click.ClickException(f"{expect}: {exc}") from None
    files = ms.collect_files(paths)
    rewrite = ms.ControlIdRewriter() if rewrite_control_ids else None
    engine = None
    if local:
        if settings.database.migrate_on_start:
            from pamfr.store.db import upgrade

            with database_errors(settings):
                upgrade(settings.database.url)
        engine = open_engine(settings, check=True)
    progress = Progress(ms.count_messages(files))
    started = time.perf_counter()
    try:
        if engine is not None:
            from pamfr.path.assemble import build_receiver

            receiver = build_receiver(engine, settings)
            batch = settings.receiver.batch_max
            tally = rp.replay_local(
                files, receiver, workers=workers, batch=batch, rewrite=rewrite, progress=progress
            )
            mode, shown = "local", safe_url(settings.database.url)
        else:
            host, port = parse_host_port(target or "")
            try:
                tally = asyncio.run(
                    rp.replay_mllp(
                        files,
                        host,
                        port,
                        connections=connections,
                        timeout=timeout,
                        rewrite=rewrite,
                        progress=progress,
                        ssl=context,
                    )
                )
            except rp.TargetUnreachable as exc:
                raise CommandError(f"--to: {exc}; nothing sent") from None
            mode, shown = "mllp", f"{host}:{port}" + (" over TLS" if context else "")
        elapsed = time.perf_counter() - started
    finally:
        progress.close()
    summary = Summary(mode, shown, len(files), tally, elapsed)
    if expected is not None or write_expect is not None:
        engine = engine or open_engine(settings, read_only=True)
        with database_errors(settings):
            state = ex.store_state(engine)
        if expected is not None:
            summary.differences = ex.compare_state(expected, state)
        if write_expect is not None:
            write_expect.write_text(json.dumps(state, ensure_ascii=False, indent=2) + "\n")
    if engine is not None:
        engine.dispose()
    click.echo(summary.render())
    if report is not None:
        report.write_text(json.dumps(summary.to_json(), ensure_ascii=False, indent=2) + "\n")
    ok = (summary.all_aa or allow_errors) and not summary.differences
    sys.exit(0 if ok else 1)


# -- generate ------------------------------------------------------------------------------


@click.command()
@config_option
@click.option("--count", type=click.IntRange(min=1), required=True, help="Messages to write.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--seed", type=int, default=2575, show_default=True)
@click.option("--per-file", type=click.IntRange(min=1), default=100, show_default=True)
@click.option(
    "--prefix",
    default="G",
    show_default=True,
    help="Start of control ids and IPPs: another prefix makes an independent set.",
)
def generate(count: int, out: Path, seed: int, per_file: int, prefix: str) -> None:
    """Write a synthetic PAM FR test set: about 50% A28, 30% A31, 15% A01, 5% A40.

    Files OUT/pamfr-NNNN.hl7 of --per-file messages each (segments ended by CR), ready for
    `pamfr replay` or a watched folder. Same seed and prefix, same set. Existing files are
    never overwritten.
    """
    from pamfr.hl7.samples import generate_mix

    out.mkdir(parents=True, exist_ok=True)
    files = (count + per_file - 1) // per_file
    width = max(4, len(str(files)))
    messages = generate_mix(count, seed, prefix)
    for n in range(files):
        chunk = [next(messages) for _ in range(min(per_file, count - n * per_file))]
        path = out / f"pamfr-{n + 1:0{width}d}.hl7"
        try:
            with open(path, "x", encoding="utf-8", newline="") as f:
                f.write("".join(chunk))
        except FileExistsError:
            raise click.ClickException(f"{path} exists: choose an empty --out folder") from None
    click.echo(f"{count} message(s) in {files} file(s) under {out}")
