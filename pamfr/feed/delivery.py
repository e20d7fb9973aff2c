"""Webhook delivery: each subscriber gets every event it asked for, in order, at least once.

One asyncio task per subscriber in the daemon's loop; the store is read and the cursor saved
in a thread pool of the feed's own (never on the loop, never in the receiver's writer), and
the POSTs go through an httpx async client, so a slow or dead subscriber costs the MLLP path
nothing but a few idle sockets.

A subscriber's cursor (table webhook_cursor) is the last event it acknowledged (2xx). It is
saved after each page of events and at least every 5 seconds while a page is delivered, so a
crash sends again the events after the saved cursor: duplicates (same X-Pamfr-Event-Id) are
possible, gaps and reordering are not. A failure waits retry_initial seconds, doubling up to
retry_max, and is tried again with the same event; after park_after consecutive failures the
subscriber is parked (`pamfr events --failed`) until `pamfr events --retry NAME`.

Several daemons on one store: one of them delivers to a subscriber at a time. On PostgreSQL it
holds a session advisory lock on a connection of its own (released by the server if the
daemon dies); on SQLite, an exclusive file lock next to the database file. The others look
again every poll interval and take over from the saved cursor.

The events and the cursors are read through `reader`, the daemon's read engine (the daemon
owns it and disposes of it once close() returned); the cursors are written through `engine`.

The body is the event as GET /events gives it; with include_resource, its "resource" is
`resource_for(patient_id)`, the patient's FHIR resource, a callable given by whoever builds
the daemon (None: "resource" is null). It is called in the feed's thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
from sqlalchemy import Engine

from pamfr.feed.store import (
    Cursor,
    ensure_cursor,
    get_cursor,
    last_event_id,
    read_events,
    save_cursor,
)
from pamfr.settings.config import FeedSettings, WebhookSettings
from pamfr.settings.readiness import Check
from pamfr.store.db import brief_error

log = logging.getLogger("pamfr.feed")
# httpx logs every request at INFO: one line per event delivered is noise in the daemon log.
logging.getLogger("httpx").setLevel(logging.WARNING)

PAGE = 100  # events read at once
# Seconds: the cursor is saved at least this often while delivering. On SQLite a save is a
# write transaction the receiver's writer waits for: once a second, to a subscriber answering
# in 2 s, it showed in the ACK latency's p99 (bench/webhook_latency.py).
SAVE_EVERY = 5.0
# pg_try_advisory_lock(int, int): this key space ("pamf") and the subscriber's name hashed.
_SUBSCRIBER_LOCK_SPACE = 0x70616D66

ResourceFor = Callable[[int], dict | None]


class DeliveryCounters(Protocol):
    """What the delivery reports (pamfr.service.metrics.Metrics implements it; its gauges read
    the subscribers at scrape time: service.metrics.watch_delivery)."""

    def webhook_result(self, subscriber: str, ok: bool) -> None: ...


class _NotCounted:
    def webhook_result(self, subscriber: str, ok: bool) -> None:
        pass


# Bytes of a subscriber's answer read (then discarded): only its status counts.
ANSWER_READ = 4096
# Sockets to one subscriber: events go one at a time, one more for a reconnect.
_LIMITS = httpx.Limits(max_connections=2, max_keepalive_connections=1)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Pamfr-Signature header: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">, so a
    captured delivery cannot be replayed once its X-Pamfr-Timestamp is too old."""
    signed = f"{timestamp}.".encode() + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


class _Lock:
    """Who delivers to one subscriber, across daemons sharing the store."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self._raw: Any = None
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock if free (never waits); True when this daemon holds it."""
        if self.engine.dialect.name == "postgresql":
            return self._pg()
        return self._file()

    def _pg(self) -> bool:
        if self._raw is not None:  # held: still, if its connection still answers
            try:
                cursor = self._raw.cursor()
                cursor.execute("SELECT 1")
                cursor.close()
                self._raw.commit()
                return True
            except Exception:
                self.release()
                return False
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                (_SUBSCRIBER_LOCK_SPACE, self.name),
            )
            (taken,) = cursor.fetchone()
            cursor.close()
            raw.commit()
        except Exception:
            raw.invalidate()
            raise
        if not taken:
            raw.close()
            return False
        self._raw = raw
        return True

    def _file(self) -> bool:
        if self._fd is not None:
            return True
        database = self.engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return True  # no file to share: this process is alone
        path = Path(database).expanduser().resolve()
        lock_path = path.with_name(f"{path.name}.webhook-{self.name}.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._raw is not None:
            # Closed for real (not returned to the pool), so the server drops the lock.
            with contextlib.suppress(Exception):
                self._raw.invalidate()
            self._raw = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class Subscriber:
    settings: WebhookSettings
    cursor: Cursor | None = None  # as last read or saved
    backlog: int = 0  # events after its cursor, as last seen
    active: bool = False  # this daemon delivers to it
    lock: _Lock | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def parked(self) -> bool:
        return self.cursor is not None and self.cursor.parked


class WebhookDelivery:
    def __init__(
        self,
        engine: Engine,
        webhooks: list[WebhookSettings],
        settings: FeedSettings | None = None,
        metrics: DeliveryCounters | None = None,
        resource_for: ResourceFor | None = None,
        *,
        reader: Engine | None = None,
    ) -> None:
        self.engine = engine  # writes the cursors
        # Reads the events and the cursors: the daemon's read engine, never disposed here
        # (without one, `engine`, which on SQLite takes the write lock for each read).
        self.reader = reader if reader is not None else engine
        self.settings = settings or FeedSettings()
        self.metrics: DeliveryCounters = metrics if metrics is not None else _NotCounted()
        self.resource_for = resource_for
        self.subscribers = [Subscriber(w, lock=_Lock(engine, w.name)) for w in webhooks]
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pamfr-feed")
        self._tasks: list[asyncio.Task] = []
        for s in self.subscribers:
            if s.settings.include_resource and resource_for is None:
                log.warning(
                    "webhook %s: include_resource is set, but this daemon has no FHIR mapping: "
                    '"resource" is null',
                    s.name,
                )

    # -- the daemon's side -------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(s), name=f"pamfr-webhook-{s.name}")
            for s in self.subscribers
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for s in self.subscribers:
            if s.lock is not None:
                s.lock.release()
        # A cancelled task leaves its read or its shielded cursor save running in the pool:
        # wait for them, so that no engine is disposed (nor the process ended) under a
        # thread still using its SQLite connection, and the last acknowledged cursor is kept.
        await asyncio.to_thread(self._pool.shutdown, wait=True)

    def check(self) -> Check:
        """For /readyz: the parked subscribers, named; readiness is not affected (a parked
        subscriber does not stop pamfr from receiving; the alert is pamfr_webhook_parked)."""
        parked = [s.name for s in self.subscribers if s.parked]
        total = len(self.subscribers)
        detail = f"{total} subscriber(s), " + (
            f"parked: {', '.join(parked)}" if parked else "none parked"
        )
        return Check("webhooks", True, detail)

    # -- one subscriber --------------------------------------------------------------------

    async def _db(self, function: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)

    def _fetch(self, s: Subscriber) -> tuple[Cursor | None, list[dict], int]:
        """Whether this daemon delivers to `s`, its cursor, and the events after it. The
        lock first: a cursor read before it could predate the last save of the daemon that
        held it."""
        assert s.lock is not None
        s.active = s.lock.acquire()
        with self.reader.connect() as conn:
            cursor = get_cursor(conn, s.name)
        if cursor is None:
            with self.engine.begin() as conn:
                cursor = ensure_cursor(conn, s.name)
        if not s.active or cursor.parked:
            return cursor, [], 0
        with self.reader.connect() as conn:
            page = read_events(conn, cursor.last_id, PAGE)
            last = page[-1]["id"] if len(page) < PAGE and page else last_event_id(conn)
        return cursor, page, max(0, last - cursor.last_id)

    def _save(self, cursor: Cursor) -> None:
        with self.engine.begin() as conn:
            save_cursor(conn, cursor)

    async def _run(self, s: Subscriber) -> None:
        poll = self.settings.poll_interval
        async with httpx.AsyncClient(
            timeout=s.settings.timeout, follow_redirects=False, limits=_LIMITS
        ) as client:
            while True:
                try:
                    cursor, page, backlog = await self._db(self._fetch, s)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.error("webhook %s: the store did not answer: %s", s.name, brief_error(exc))
                    await asyncio.sleep(poll)
                    continue
                s.cursor, s.backlog = cursor, backlog
                if not page:
                    await asyncio.sleep(poll)
                    continue
                try:
                    await self._deliver(s, client, page)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the store (a cursor save, the resource) failed:
                    # the page is taken again from the saved cursor, at least once as ever
                    log.error("webhook %s: delivery stopped: %s", s.name, brief_error(exc))
                    await asyncio.sleep(poll)

    async def _deliver(self, s: Subscriber, client: httpx.AsyncClient, page: list[dict]) -> None:
        cursor = s.cursor
        assert cursor is not None
        saved = cursor
        last_save = time.monotonic()
        try:
            for event in page:
                if s.settings.wants(event["type"]):
                    error = await self._post(s, client, event)
                    if error is not None:
                        cursor = self._failed(s, cursor, error)
                        await self._db(self._save, cursor)
                        saved = s.cursor = cursor
                        if not cursor.parked:
                            await asyncio.sleep(self._backoff(cursor.failures))
                        return
                cursor = replace(cursor, last_id=event["id"], failures=0, last_error=None)
                s.cursor = cursor
                s.backlog = max(0, s.backlog - 1)
                if time.monotonic() - last_save >= SAVE_EVERY:
                    await self._db(self._save, cursor)
                    saved, last_save = cursor, time.monotonic()
        finally:
            if cursor is not saved:
                # Also on cancellation (the daemon stops): what was acknowledged is kept.
                await asyncio.shield(self._db(self._save, cursor))

    async def _post(self, s: Subscriber, client: httpx.AsyncClient, event: dict) -> str | None:
        """POST one event; None when the subscriber acknowledged it (2xx), else why not."""
        payload = dict(event)
        if s.settings.include_resource:
            resource_for = self.resource_for
            payload["resource"] = (
                await self._db(resource_for, event["patient_id"]) if resource_for else None
            )
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "pamfr-webhook",
            "X-Pamfr-Event-Id": str(event["id"]),
            "X-Pamfr-Event-Type": event["type"],
            "X-Pamfr-Timestamp": str(timestamp),
            "X-Pamfr-Signature": signature(s.settings.secret or "", timestamp, body),
        }
        try:
            # One deadline for the whole POST: connecting, sending, the answer's head and
            # the few bytes of its body read (httpx's timeout is per read: a subscriber
            # dripping a byte at a time would never reach it).
            async with asyncio.timeout(s.settings.timeout):
                status = await _post_once(client, s.settings.url, body, headers)
        except TimeoutError:
            error = f"no answer within {s.settings.timeout:g}s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        else:
            error = None if 200 <= status < 300 else f"HTTP {status}"
        self.metrics.webhook_result(s.name, error is None)
        return error

    def _failed(self, s: Subscriber, cursor: Cursor, error: str) -> Cursor:
        failures = cursor.failures + 1
        parked = failures >= s.settings.park_after
        if parked:
            log.error(
                "webhook %s: parked after %d consecutive failures (last: %s); "
                "`pamfr events --retry %s` resumes it",
                s.name,
                failures,
                error,
                s.name,
            )
        else:
            log.warning("webhook %s: delivery failed (%d in a row): %s", s.name, failures, error)
        return replace(
            cursor,
            failures=failures,
            last_error=error[:500],
            parked_at=datetime.now(UTC) if parked else None,
        )

    def _backoff(self, failures: int) -> float:
        f = self.settings
        return min(f.retry_max, f.retry_initial * 2 ** max(0, failures - 1))


async def _post_once(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]
) -> int:
    """POST, read at most ANSWER_READ bytes of the answer and drop the rest with the
    connection: a subscriber answering 300 MB costs a few KiB. The answer's status."""
    async with client.stream("POST", url, content=body, headers=headers) as answer:
        read = 0
        async for chunk in answer.aiter_raw():
            read += len(chunk)
            if read >= ANSWER_READ:
                break
        return answer.status_code
