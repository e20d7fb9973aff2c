"""`pamfr api`: the FHIR read API of a store, without the MLLP daemon."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import click

from pamfr.cli.common import (
    LOG_LEVELS,
    CommandError,
    Context,
    database_errors,
    db_option,
    open_engine,
    safe_url,
)
from pamfr.settings.logsetup import setup_logging

log = logging.getLogger("pamfr.api")

DEFAULT_LISTEN = "127.0.0.1:8091"


@click.command()
@db_option
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help=f"Address of the API (default {DEFAULT_LISTEN}: local only). Off the loopback, "
    "[http] tls_cert/tls_key and [http] tokens (or tls_client_ca) are required.",
)
@click.option("--log-level", type=LOG_LEVELS, help="debug shows identifiers; info never does.")
@click.pass_obj
def api(obj: Context, db_url: str | None, listen: str | None, log_level: str | None) -> None:
    """Serve the FHIR R4 read API (/fhir: FR Core Patient, read, search, history), the change
    feed (/events), /healthz, and the desk (/desk) when [desk] enabled, from the store, until
    SIGTERM or SIGINT.

    Tokens and TLS are [http] tokens, tls_cert, tls_key and tls_client_ca of the
    configuration (PAMFR_HTTP_TOKENS='{"name": "token"}'). See docs/fhir.md.
    """
    from pamfr.settings.config import split_listen

    settings = obj.settings(**{"database.url": db_url, "log.level": log_level})
    setup_logging(settings.log.level, settings.log.format)
    address = listen or DEFAULT_LISTEN
    try:
        host, port = split_listen(address)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    from pamfr.service.daemon import http_access_warnings, http_port_refusal, http_refusal
    from pamfr.service.security import SecurityConfigError, listener_tls

    try:
        tls = listener_tls(settings.http, "http")
    except SecurityConfigError as exc:
        raise CommandError(str(exc)) from None
    checked = settings.model_copy(
        update={"http": settings.http.model_copy(update={"listen": address, "fhir": True})}
    )
    refused = http_refusal(checked, tls) or http_port_refusal(checked, tls, health=False)
    if refused:
        raise CommandError(refused.replace("http.listen", "--listen", 1))
    open_engine(settings, read_only=True).dispose()  # the store exists and holds pamfr's schema
    from pamfr.store.db import make_read_engine

    with database_errors(settings):
        engine = make_read_engine(
            settings.database.url, busy_timeout=settings.database.sqlite_busy_timeout
        )
    desk = None
    if settings.desk.enabled:  # the desk writes its access log and decisions: a write engine
        from pamfr.service.daemon import desk_of

        desk = desk_of(settings, None, lambda: engine, open_engine(settings))
    try:
        for warning in http_access_warnings(checked):
            log.warning("%s", warning)
        code = asyncio.run(_serve(engine, host, port, tls, checked, desk))
    finally:
        engine.dispose()
        if desk is not None:
            desk.write_engine.dispose()
    sys.exit(code)


async def _serve(engine, host: str, port: int, tls, settings, desk=None) -> int:
    from pamfr.http.app import build_app
    from pamfr.http.server import HttpServer
    from pamfr.service.daemon import http_access

    access = http_access(settings)
    tokens = access["tokens"]

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = HttpServer(
        build_app(None, None, fhir_engine=engine, events_engine=engine, desk=desk, **access),
        host,
        port,
        tls,
        max_concurrency=settings.http.max_concurrency,
        header_timeout=settings.http.header_timeout,
    )
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d (--listen): %s", host, port, exc)
        return 2
    log.info(
        "FHIR API on %s:%d (/fhir, /events, /healthz%s)%s, %s, database %s",
        server.host,
        server.port,
        ", /desk" if desk is not None else "",
        " over TLS" if tls is not None else "",
        f"tokens: {', '.join(sorted(tokens))}" if tokens else "no token",
        safe_url(settings.database.url),
    )
    await stop.wait()
    await server.close()
    log.info("stopped")
    return 0
