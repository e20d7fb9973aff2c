"""Readiness of a running daemon, and the store's counts that /metrics shows.

Ready means: the MLLP listener accepts, the database answers within its timeout, the parse
workers are alive. The database is asked in a thread (never on the event loop); a check that
is still waiting for a database that does not answer is joined by the next one rather than
adding a thread each time.

The daemon hands `Health.readiness` and `Health.exposition` to the HTTP port
(http/app.build_app) for /readyz and /metrics; the values of a check (Check, Readiness) are
in the bottom room (pamfr/settings/readiness.py), where feed/ and http/ see them too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from pamfr.path.pipeline import AsyncReceiver
from pamfr.service.metrics import Metrics
from pamfr.settings.readiness import Check, Readiness
from pamfr.store.db import brief_error
from pamfr.transport.server import MLLPServer

__all__ = ["Check", "Health", "IdentityCounts", "Readiness"]

_PROBE = "SELECT version_num FROM alembic_version"
_IDENTITIES = (
    "SELECT status, ins_collision, count(*) FROM patient WHERE active"
    " GROUP BY status, ins_collision"
)


@dataclass(frozen=True, slots=True)
class IdentityCounts:
    by_status: dict[str, int]
    ins_collisions: int


def _read(engine: Engine, sql: str) -> list[tuple]:
    """One read on a pooled DBAPI connection: no BEGIN IMMEDIATE (pamfr's SQLite engines
    take the write lock on begin), so the check never waits for the writer."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        try:
            cursor.execute(sql)
            rows = [tuple(r) for r in cursor.fetchall()]
        finally:
            cursor.close()
        raw.rollback()
        return rows
    finally:
        raw.close()


class _Single:
    """At most one call of `function` in a thread at a time; callers share the one running."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self._function = function
        self._running: asyncio.Future | None = None

    async def __call__(self, timeout: float) -> Any:
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(asyncio.to_thread(self._function))
            # Its failure may come after every caller gave up waiting: read, not logged.
            self._running.add_done_callback(lambda f: f.cancelled() or f.exception())
        return await asyncio.wait_for(asyncio.shield(self._running), timeout)


class Health:
    """Checks one daemon's parts; `timeout` is what the database is given to answer; each
    check sets `metrics`' pamfr_ready."""

    def __init__(
        self,
        server: MLLPServer,
        handler: AsyncReceiver,
        engine: Engine,
        timeout: float = 2.0,
        *,
        metrics: Metrics,
    ) -> None:
        self.server = server
        self.handler = handler
        self.engine = engine
        self.timeout = timeout
        self.metrics = metrics
        self.stopping = False
        # Checks of other parts (the webhook subscribers): reported, read at each check.
        self.extra_checks: list[Callable[[], Check]] = []
        self._probe = _Single(lambda: _read(engine, _PROBE))
        self._identities = _Single(lambda: _read(engine, _IDENTITIES))

    async def readiness(self) -> Readiness:
        checks = (
            self._listener(),
            await self._database(),
            self._workers(),
            *(check() for check in self.extra_checks),
        )
        self.metrics.ready.set(1 if all(c.ok for c in checks) else 0)
        return Readiness(checks)

    async def exposition(self) -> bytes:
        """What /metrics answers: the readiness and the store's counts read afresh, then the
        Prometheus text of every metric."""
        _, counts = await asyncio.gather(self.readiness(), self.identity_counts())
        if counts is not None:
            self.metrics.identities = counts.by_status
            self.metrics.ins_collisions = counts.ins_collisions
        else:  # the store did not answer: no figure rather than a stale one
            self.metrics.identities = None
            self.metrics.ins_collisions = None
        return self.metrics.exposition()

    def _listener(self) -> Check:
        where = f"{self.server.host}:{self.server.port}"
        if self.stopping:
            return Check("mllp", False, "stopping")
        if not self.server.accepting:
            return Check("mllp", False, f"not accepting on {where}")
        return Check("mllp", True, f"accepting on {where}")

    async def _database(self) -> Check:
        started = time.perf_counter()
        try:
            await self._probe(self.timeout)
        except TimeoutError:
            return Check("database", False, f"no answer within {self.timeout:g} s")
        except Exception as exc:
            return Check("database", False, brief_error(exc))
        elapsed = (time.perf_counter() - started) * 1000
        return Check("database", True, f"answered in {elapsed:.1f} ms")

    def _workers(self) -> Check:
        workers = self.handler.parse_workers
        if workers is None:
            return Check("parse_workers", True, "parsing in threads")
        alive = workers.alive
        detail = f"{alive} of {workers.size} alive"
        return Check("parse_workers", alive == workers.size, detail)

    async def identity_counts(self) -> IdentityCounts | None:
        """Active patients by status and INS collisions; None when the store does not answer."""
        try:
            rows = await self._identities(self.timeout)
        except Exception:
            return None
        by_status: dict[str, int] = {}
        collisions = 0
        for status, collision, count in rows:
            by_status[status] = by_status.get(status, 0) + count
            if collision:
                collisions += count
        return IdentityCounts(by_status, collisions)
