"""`pamfr serve`: the MLLP server (and the file-drop watcher when configured) until a signal."""

from __future__ import annotations

import asyncio
import logging
import signal

from sqlalchemy.engine import make_url

from pamfr.config import Settings
from pamfr.ingest.filedrop import FileDropWatcher
from pamfr.pipeline import AsyncReceiver
from pamfr.receiver import Receiver
from pamfr.store.db import make_engine, upgrade
from pamfr.transport.server import MLLPServer, ServerLimits

log = logging.getLogger("pamfr.daemon")


async def run_daemon(settings: Settings) -> int:
    url = settings.database.url
    shown = make_url(url).render_as_string(hide_password=True)
    if settings.database.migrate_on_start:
        upgrade(url)
    engine = make_engine(url, synchronous=settings.database.sqlite_synchronous)
    receiver = Receiver(engine, processing_ids=settings.receiver.processing_ids)
    handler = AsyncReceiver(
        receiver,
        batch_max=settings.receiver.batch_max,
        parse_workers=settings.receiver.parse_workers,
    )
    s = settings.server
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
        ),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await handler.start()
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", s.host, s.port, exc)
        handler.close()
        return 2
    log.info("pamfr listening on %s:%d (MLLP), database %s", s.host, server.port, shown)
    watcher, watching = None, None
    if settings.filedrop.dirs:  # the file door shares the receiver and its writer
        watcher = FileDropWatcher(handler, settings.filedrop)
        watching = asyncio.create_task(watcher.run())
        log.info("watching %s for dropped files", ", ".join(settings.filedrop.dirs))
    await stop.wait()
    log.info("stopping: no new connections, answering the messages in flight")
    if watcher is not None and watching is not None:
        watcher.stop()  # finishes the message in hand; the file stays in its inbox
        await asyncio.gather(server.close(), watching)
    else:
        await server.close()
    await asyncio.to_thread(handler.close)
    engine.dispose()
    log.info("stopped")
    return 0
