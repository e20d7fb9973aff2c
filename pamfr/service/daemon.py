"""`pamfr serve`: the MLLP server (and the file-drop watcher when configured) until a signal.

SIGTERM/SIGINT: stop accepting, answer the messages already received, exit 0 within
[server] shutdown_grace. SIGHUP: reload the allow-lists and the log level (pamfr.service.reload).
With [http] listen, an HTTP port in the same event loop answers /healthz, /readyz, /metrics,
/events. With [[webhooks]], the change feed is POSTed to each subscriber (pamfr/feed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from pamfr.ingest.filedrop import FileDropWatcher
from pamfr.path.assemble import build_receiver
from pamfr.path.pipeline import AsyncReceiver
from pamfr.service.health import Health
from pamfr.service.metrics import Metrics, watch_daemon, watch_delivery
from pamfr.service.reload import Reloader
from pamfr.service.sdnotify import notify
from pamfr.service.security import (
    SecurityConfigError,
    describe_access,
    listener_tls,
    mllp_refusal,
    peer_filter,
)
from pamfr.settings.config import Settings, split_listen
from pamfr.settings.location import sqlite_path
from pamfr.store.db import check_at_head, make_engine, make_read_engine, upgrade
from pamfr.store.filemodes import warn_if_exposed
from pamfr.store.retention import PurgeResult, purge_merged_history, purge_raw
from pamfr.transport.access import is_loopback
from pamfr.transport.server import MLLPServer, ServerLimits

log = logging.getLogger("pamfr.service.daemon")

# Left to the writer to finish its transaction once the grace period is over.
_WRITER_MIN_WAIT = 0.5
# How long a thread holding the GIL keeps it when another asks (CPython's default: 5 ms). The
# writer thread waits on the database many times a batch and each time needs the GIL back from
# the busy event loop: at 5 ms that wait was most of a SQLite batch.
GIL_SWITCH_INTERVAL = 0.001
# With [retention] raw_messages_days: a purge shortly after the start, then one a day.
PURGE_FIRST_DELAY = 60.0
PURGE_INTERVAL = 24 * 3600.0


async def run_daemon(
    settings: Settings, reload: Callable[[], Settings] | None = None, source: str = ""
) -> int:
    """Serve until SIGTERM/SIGINT; `reload` loads the configuration again on SIGHUP.

    Every part that holds something (engines, the writer and the parse workers, the listeners,
    the file-drop watcher, the webhook delivery, the background tasks) is entered into one
    AsyncExitStack as soon as it exists: the normal stop, a start-up failure halfway and an
    exception all close what was opened, in the reverse order."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    hup = asyncio.Event()  # a SIGHUP before the listener is up is applied once it is
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hup.set)
    s = settings.server
    try:
        tls = listener_tls(s)
        http_tls = listener_tls(settings.http, "http")
    except SecurityConfigError as exc:
        log.error("cannot start: %s", exc)
        return 2
    refused = (
        mllp_refusal(s) or http_refusal(settings, http_tls) or http_port_refusal(settings, http_tls)
    )
    if refused:
        log.error("cannot start: %s", refused)
        return 2
    if s.allow_any_peer and not is_loopback(s.host):
        log.warning(
            "server.allow_any_peer = true: any address that reaches %s:%d may send identities",
            s.host,
            s.port,
        )
    db = settings.database
    if db.migrate_on_start:
        upgrade(db.url)
    else:
        check_at_head(db.url)
    store_file = sqlite_path(db.url)
    if store_file is not None:  # once it is known to be a store: a text file is refused above
        warn_if_exposed(store_file)
    async with contextlib.AsyncExitStack() as stack:
        code = await _serve(stack, settings, tls, http_tls, stop, hup, reload, source)
    if code == 0:
        log.info("stopped")
    return code


@dataclass
class _Stop:
    """What the closing parts share: the deadline of the stop (set when it begins, or when the
    first part asks: a start-up failure) and whether the writer stopped cleanly."""

    grace: float
    deadline: float | None = None
    writer_stopped: bool = True

    def begin(self) -> float:
        if self.deadline is None:
            self.deadline = asyncio.get_running_loop().time() + self.grace
        return self.deadline


class _ReadEngine:
    """The daemon's one read-only engine (a read never takes the write lock), made on first
    use, shared by /fhir, /events, the desk and the webhook delivery."""

    def __init__(self, url: str, busy_timeout: float | None) -> None:
        self.url = url
        self.busy_timeout = busy_timeout
        self.engine: Engine | None = None

    def __call__(self) -> Engine:
        if self.engine is None:
            self.engine = make_read_engine(self.url, busy_timeout=self.busy_timeout)
        return self.engine

    def dispose(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


async def _serve(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    tls: ssl.SSLContext | None,
    http_tls: ssl.SSLContext | None,
    stop: asyncio.Event,
    hup: asyncio.Event,
    reload: Callable[[], Settings] | None,
    source: str,
) -> int:
    """Start the parts, each entered into `stack` where it is made, and serve until `stop`;
    the exit code (2: a listener could not start). The caller's stack closes them."""
    s = settings.server
    db = settings.database
    stopping = _Stop(s.shutdown_grace)
    engine = make_engine(
        db.url, synchronous=db.sqlite_synchronous, busy_timeout=db.sqlite_busy_timeout
    )
    stack.callback(_dispose_writer_engine, engine, stopping)
    read_engine = _ReadEngine(db.url, db.sqlite_busy_timeout)
    stack.callback(read_engine.dispose)
    metrics = Metrics()
    receiver = build_receiver(engine, settings)
    handler = AsyncReceiver(
        receiver,
        batch_max=settings.receiver.batch_max,
        parse_workers=settings.receiver.parse_workers,
        metrics=metrics,
    )
    stack.push_async_callback(_stop_writer, handler, stopping)
    server = MLLPServer(
        handler,
        host=s.host,
        port=s.port,
        limits=ServerLimits(
            max_frame_size=s.max_frame_size,
            idle_timeout=s.idle_timeout,
            frame_timeout=s.frame_timeout,
            max_connections=s.max_connections,
            shutdown_grace=s.shutdown_grace,
            max_connections_per_peer=s.max_connections_per_peer,
            first_frame_timeout=s.first_frame_timeout,
        ),
        ssl=tls,
        peer_filter=peer_filter(s),
        metrics=metrics,
    )
    watcher = None
    if settings.filedrop.dirs:  # the file door shares the receiver and its writer
        watcher = FileDropWatcher(
            handler, settings.filedrop, metrics=metrics, max_message_size=s.max_frame_size
        )
    health = Health(server, handler, engine, settings.http.check_timeout, metrics=metrics)
    await handler.start()
    if settings.http.listen:  # up first: /readyz says 503 until the listener accepts
        watch_daemon(metrics, server, handler, watcher)
        started = await _start_http(
            stack, settings, http_tls, health, read_engine, engine, watcher
        )
        if not started:
            return 2
    if settings.webhooks:  # the change feed pushed to its subscribers (pamfr/feed/delivery)
        await _start_delivery(stack, settings, engine, read_engine, metrics, health)
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", s.host, s.port, exc)
        return 2
    stack.push_async_callback(server.close)
    shown = make_url(db.url).render_as_string(hide_password=True)
    log.info("pamfr listening on %s:%d (MLLP), database %s", s.host, server.port, shown)
    log.info("access: %s", describe_access(s, tls))
    if watcher is not None:
        watching = asyncio.create_task(watcher.run())
        stack.push_async_callback(_close_doors, server, watcher, watching, stopping)
        log.info("watching %s for dropped files", ", ".join(settings.filedrop.dirs))
    reloader = Reloader(reload or (lambda: settings), settings, server, receiver, source)
    stack.push_async_callback(_cancel, asyncio.create_task(_on_hup(hup, reloader)))
    keep = settings.retention
    if keep.raw_messages_days is not None or keep.merged_history_days is not None:
        retention = _purge_daily(engine, keep.raw_messages_days, keep.merged_history_days, metrics)
        stack.push_async_callback(_cancel, asyncio.create_task(retention))
    notify("READY=1")  # systemd Type=notify: the listener accepts
    await stop.wait()
    notify("STOPPING=1")
    health.stopping = True  # /readyz answers 503 from now on
    stopping.begin()
    log.info("stopping: no new connections, answering the messages in flight")
    return 0


async def _start_http(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    http_tls: ssl.SSLContext | None,
    health: Health,
    read_engine: _ReadEngine,
    engine: Engine,
    watcher: FileDropWatcher | None,
) -> bool:
    """The HTTP port, entered into `stack` once it listens; False when it cannot listen."""
    from pamfr.http.app import build_app
    from pamfr.http.server import HttpServer

    # The feed holds identifiers: off this host only where patient data may go.
    feed_exposed = http_refusal(settings, http_tls, serves_data=True)
    if feed_exposed:
        log.warning("GET /events not served: %s", feed_exposed)
    for warning in http_access_warnings(settings):
        log.warning("%s", warning)
    desk = desk_of(settings, feed_exposed, read_engine, engine, door_states(health, watcher))
    app = build_app(
        health.readiness,
        health.exposition,
        fhir_engine=read_engine() if settings.http.fhir else None,
        events_engine=None if feed_exposed else read_engine(),
        desk=desk,
        **http_access(settings),
    )
    http = HttpServer(
        app,
        *split_listen(settings.http.listen),
        tls=http_tls,
        max_concurrency=settings.http.max_concurrency,
        header_timeout=settings.http.header_timeout,
    )
    try:
        await http.start()
    except OSError as exc:
        log.error("cannot listen on %s (http.listen): %s", settings.http.listen, exc)
        return False
    stack.push_async_callback(http.close)
    log.info(
        "HTTP port on %s:%d (/healthz, /readyz, /metrics%s%s%s)%s",
        http.host,
        http.port,
        ", /fhir" if settings.http.fhir else "",
        "" if feed_exposed else ", /events",
        ", /desk" if desk is not None else "",
        " over TLS" if http_tls is not None else "",
    )
    return True


async def _start_delivery(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    engine: Engine,
    read_engine: _ReadEngine,
    metrics: Metrics,
    health: Health,
) -> None:
    """The webhook delivery, entered into `stack` and started: it reads through the daemon's
    read engine and saves the cursors through the writer's engine."""
    from pamfr.feed.delivery import WebhookDelivery
    from pamfr.fhirread.patient import current_resource

    resource_for = None
    if any(w.include_resource for w in settings.webhooks):
        resource_for = current_resource(read_engine())
    delivery = WebhookDelivery(
        engine,
        settings.webhooks,
        settings.feed,
        metrics,
        resource_for=resource_for,
        reader=read_engine(),
    )
    watch_delivery(metrics, delivery)
    # keeps the cursors of what the subscribers acknowledged
    stack.push_async_callback(delivery.close)
    health.extra_checks.append(delivery.check)
    delivery.start()
    log.info("webhooks: delivering to %s", ", ".join(w.name for w in settings.webhooks))


def door_states(health: Health, watcher: FileDropWatcher | None):
    """What the desk's overview shows of the doors: the readiness checks (MLLP listener,
    database, parse workers, webhooks) and the file drop's backlog."""

    async def states():
        from pamfr.desk.app import DoorState

        readiness = await health.readiness()
        found = [DoorState(c.name, c.ok, c.detail) for c in readiness.checks]
        if watcher is not None:
            found.append(DoorState("filedrop", True, f"{watcher.backlog} file(s) waiting"))
        return found

    return states


def desk_of(settings: Settings, exposed: str | None, read_engine, write_engine, doors=None):
    """The identity-vigilance desk when [desk] enabled asks for it and it may be served;
    `doors` gives the state of the daemon's doors for its overview."""
    if not settings.desk.enabled:
        return None
    if exposed:
        log.warning("/desk not served: %s", exposed)
        return None
    if not settings.http.tokens:
        log.warning("/desk not served: no [http] tokens to sign in with")
        return None
    from pamfr.desk.app import Desk

    return Desk(read_engine(), write_engine, settings, doors)


def http_refusal(settings: Settings, tls: object | None, serves_data: bool = False) -> str | None:
    """Why the HTTP port may not serve patient data as configured (one line), or None.
    The port serves patient data when /fhir is on, or `serves_data` says it would."""
    h = settings.http
    if not h.listen or not (h.fhir or serves_data):
        return None
    if h.fhir and h.public_url:
        from pamfr.http.fhir import public_url_problem

        problem = public_url_problem(h.public_url)
        if problem:
            return problem
    from pamfr.http.access import check_exposure

    host, _ = split_listen(h.listen)
    return check_exposure(
        host, tls=tls is not None, tokens=h.tokens, client_ca=bool(h.tls_client_ca)
    )


def http_port_refusal(settings: Settings, tls: object | None, health: bool = True) -> str | None:
    """Why the HTTP port may not start as configured, beyond patient data (one line), or
    None: a public URL that is not one, anonymous access off the loopback, /readyz and
    /metrics (with `health`) off the loopback in clear without saying so on purpose."""
    from pamfr.http.access import public_host

    h = settings.http
    if not h.listen:
        return None
    host, _ = split_listen(h.listen)
    if h.public_url:
        try:
            public_host(h.public_url)
        except ValueError as exc:
            return str(exc)
    if h.anonymous_loopback and not is_loopback(host):
        return f"http.anonymous_loopback is for a loopback listen address, not {host}"
    if health and not is_loopback(host) and tls is None and not h.health_without_tls:
        return (
            f"http.listen {host} is not the loopback: /readyz and /metrics off this host need "
            "TLS (http.tls_cert and http.tls_key), or http.health_without_tls = true on purpose"
        )
    return None


def http_access(settings: Settings) -> dict:
    """The access arguments of build_app: tokens, anonymous loopback, accepted Host names."""
    from pamfr.http.access import allowed_hosts

    h = settings.http
    host, _ = split_listen(h.listen)
    return {
        "tokens": h.tokens,
        "anonymous": h.anonymous_loopback and is_loopback(host),
        "hosts": allowed_hosts(host, h.public_url),
        "public_url": h.public_url,
    }


def http_access_warnings(settings: Settings) -> list[str]:
    """What the start-up log must say about who may read the data routes."""
    h = settings.http
    if h.anonymous_loopback:
        return [
            "http.anonymous_loopback = true: /fhir and /events answer every process of this "
            "host without a token"
        ]
    if not h.tokens and not h.tls_client_ca:
        return [
            "no http.tokens: every route but /healthz, /readyz, /metrics and /fhir/metadata "
            "answers 401"
        ]
    return []


def purge_old_raw(engine: Engine, days: int, metrics: Metrics | None = None) -> PurgeResult | None:
    """One retention pass (the daemon runs it daily): logs and counts what it did, never
    raises."""
    try:
        result = purge_raw(engine, days)
    except SQLAlchemyError as exc:
        log.error("retention: purge not done, the database failed: %s", type(exc).__name__)
        result = None
    if metrics is not None:
        metrics.purge_done(result.purged if result is not None else None)
    return result


def purge_old_history(engine: Engine, days: int) -> None:
    """The history part of the daily retention pass: logs what it did, never raises."""
    try:
        purge_merged_history(engine, days)
    except SQLAlchemyError as exc:
        log.error("retention: history not purged, the database failed: %s", type(exc).__name__)


async def _purge_daily(
    engine: Engine, raw_days: int | None, history_days: int | None, metrics: Metrics
) -> None:
    await asyncio.sleep(PURGE_FIRST_DELAY)
    while True:
        if raw_days is not None:
            await asyncio.to_thread(purge_old_raw, engine, raw_days, metrics)
        if history_days is not None:
            await asyncio.to_thread(purge_old_history, engine, history_days)
        await asyncio.sleep(PURGE_INTERVAL)


async def _on_hup(hup: asyncio.Event, reloader: Reloader) -> None:
    while True:
        await hup.wait()
        hup.clear()
        reloader.reload()


async def _cancel(task: asyncio.Task) -> None:
    """Cancel a background task and wait until it has ended."""
    task.cancel()
    await asyncio.wait({task})


async def _close_doors(
    server: MLLPServer, watcher: FileDropWatcher, watching: asyncio.Task, stopping: _Stop
) -> None:
    """Both doors at once: the MLLP listener closes while the watcher finishes the message in
    hand (its file stays in its inbox), both until the deadline."""
    watcher.stop()
    await asyncio.gather(server.close(), _finish(watching, stopping.begin()))


async def _stop_writer(handler: AsyncReceiver, stopping: _Stop) -> None:
    stopping.writer_stopped = await _close_writer(handler, stopping.begin())


def _dispose_writer_engine(engine: Engine, stopping: _Stop) -> None:
    """Disposed unless the writer was abandoned in a transaction: its connection is in use
    by the writer thread, and the process exit rolls the transaction back."""
    if stopping.writer_stopped:
        engine.dispose()


async def _finish(task: asyncio.Task, deadline: float) -> None:
    """Wait for the file-drop watcher until the deadline, then cancel it (its file stays)."""
    loop = asyncio.get_running_loop()
    done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
    if not done:
        task.cancel()
        await asyncio.wait({task})


async def _close_writer(handler: AsyncReceiver, deadline: float) -> bool:
    """Let the writer commit what it holds, until the deadline. Past it, the transaction in
    progress is abandoned: the process exit rolls it back and its senders, never ACKed,
    will resend. True when the writer stopped cleanly."""
    loop = asyncio.get_running_loop()
    closing = threading.Thread(target=handler.close, name="pamfr-close", daemon=True)
    closing.start()
    wait_until = max(deadline, loop.time() + _WRITER_MIN_WAIT)
    while closing.is_alive() and loop.time() < wait_until:
        await asyncio.sleep(0.02)
    if closing.is_alive():
        log.warning(
            "shutdown grace expired while the database was busy: the transaction in progress "
            "is abandoned (rolled back), its messages were not acknowledged"
        )
        return False
    return True
