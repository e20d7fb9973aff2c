"""The receiver behind the asyncio doors: parsing off the event loop, one writer thread that
commits the messages of all connections in groups, ACKs released only after the commit."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import queue
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from pamfr.hl7.frame import Door, Inbound, Outcome, Prepared
from pamfr.hl7.prepare import prepare, prepare_many
from pamfr.path.parse_workers import ParseWorkers, WorkerDied
from pamfr.path.receiver import Receiver
from pamfr.settings.logsetup import current_format

log = logging.getLogger(__name__)

_STOP = object()


class PathCounters(Protocol):
    """What the path reports (pamfr.service.metrics.Metrics implements it)."""

    def committed(self, size: int, seconds: float) -> None: ...

    def answered(self, door: str, outcome: Outcome) -> None: ...


class _NotCounted:
    def committed(self, size: int, seconds: float) -> None:
        pass

    def answered(self, door: str, outcome: Outcome) -> None:
        pass


@dataclass
class _Pending:
    prepared: Prepared
    future: asyncio.Future[Outcome]
    loop: asyncio.AbstractEventLoop


class GroupCommitWriter:
    """One thread that owns every database write; messages ready together share a transaction.

    A batch whose commit raises is answered with the exception and the writer goes on (a
    door's sender resends); with `stop_on_error` (replay, where order is the point) every
    message after it is answered with the same exception, never committed."""

    def __init__(
        self,
        receiver: Receiver,
        batch_max: int = 64,
        metrics: PathCounters | None = None,
        *,
        stop_on_error: bool = False,
    ) -> None:
        self.receiver = receiver
        self.batch_max = batch_max
        self.metrics: PathCounters = metrics if metrics is not None else _NotCounted()
        self.stop_on_error = stop_on_error
        self._failed: BaseException | None = None
        self._queue: queue.Queue[_Pending | object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="pamfr-writer", daemon=True)
        self._thread.start()

    def submit(self, prepared: Prepared) -> asyncio.Future[Outcome]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._queue.put(_Pending(prepared, future, loop))
        return future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            while len(batch) < self.batch_max:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(more)
            pending = [p for p in batch if isinstance(p, _Pending)]
            if self._failed is not None:
                for p in pending:
                    _answer(p, _fail, self._failed)
                continue
            started = time.perf_counter()
            try:
                outcomes = self.receiver.commit([p.prepared for p in pending])
            except BaseException as exc:  # never leave a sender waiting for an ACK
                self.metrics.committed(len(pending), time.perf_counter() - started)
                log.error("writer failed on a batch of %d: %s", len(pending), type(exc).__name__)
                log.debug("writer failure", exc_info=True)
                for p in pending:
                    _answer(p, _fail, exc)
                if self.stop_on_error:
                    self._failed = exc
                continue
            self.metrics.committed(len(pending), time.perf_counter() - started)
            for p, outcome in zip(pending, outcomes, strict=True):
                _answer(p, _resolve, outcome)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()


def _answer(p: _Pending, settle, value) -> None:
    """Settle a submitter's future in its own loop; nothing when that loop has closed."""
    with contextlib.suppress(RuntimeError):
        p.loop.call_soon_threadsafe(settle, p.future, value)


def _resolve(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():
        future.set_result(outcome)


def _fail(future: asyncio.Future[Outcome], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _exit_with(owner: int) -> None:
    """A worker's watch on the process that owns the pool: a killed daemon (SIGKILL) cannot
    stop its workers, whose parent is the forkserver, so they stop themselves."""
    while True:
        time.sleep(1.0)
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:  # the pid now belongs to another user's process
            os._exit(0)


def _start_worker(owner: int, log_level: int, log_format: str = "text") -> None:
    """Parse worker start-up: logging like the daemon's, a watch on the daemon, hl7apy's
    tables loaded once and kept out of the GC's way."""
    from pamfr.hl7.warmup import WARM_UP_MESSAGE
    from pamfr.settings.logsetup import setup_logging

    setup_logging(logging.getLevelName(log_level).lower(), log_format)
    # A stop signal sent to the whole process group (Ctrl-C, systemd's default KillMode) is
    # the daemon's to handle: it answers what is in flight, then closes the workers' sockets.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(owner,), daemon=True).start()
    prepare(Inbound(WARM_UP_MESSAGE))
    gc.collect()
    gc.freeze()


class AsyncReceiver:
    """Receiver for asyncio callers (the MLLP server, the file-drop watcher, replay --local);
    `stop_on_error`: see GroupCommitWriter."""

    def __init__(
        self,
        receiver: Receiver,
        *,
        batch_max: int = 64,
        parse_workers: int = 0,
        door: Door = Door.MLLP,
        metrics: PathCounters | None = None,
        stop_on_error: bool = False,
    ) -> None:
        self.receiver = receiver
        self.door = door
        self.metrics: PathCounters = metrics if metrics is not None else _NotCounted()
        self.writer = GroupCommitWriter(
            receiver, batch_max, self.metrics, stop_on_error=stop_on_error
        )
        self.parsing = 0  # messages handed to the parse workers, not back yet
        self.committing = 0  # messages handed to the writer, not committed yet
        # Worker processes for the CPU-bound parse (hl7apy holds the GIL); 0 means threads.
        self._threads = ThreadPoolExecutor(2, "pamfr-parse") if parse_workers <= 0 else None
        self._processes = (
            ParseWorkers(
                parse_workers,
                _start_worker,
                (os.getpid(), logging.getLogger().getEffectiveLevel(), current_format()),
            )
            if parse_workers > 0
            else None
        )

    async def start(self) -> None:
        """Start the parse workers now rather than on the first message (its ACK would wait)."""
        if self._processes is not None:
            await self._processes.start()

    async def receive(self, inbound: Inbound) -> Outcome:
        """The whole path: parse, then commit; the outcome once committed."""
        return await self.submit(await self.parse(inbound))

    async def parse(self, inbound: Inbound) -> Prepared:
        """The CPU step, off the event loop (a parse worker, else a thread)."""
        return await self._run(prepare, inbound, 1)

    async def parse_many(self, inbounds: list[Inbound]) -> list[Prepared]:
        """`parse` for several frames in one round trip to a worker (replay's chunks)."""
        return await self._run(prepare_many, inbounds, len(inbounds))

    async def _run(self, function, frames, count: int):
        args = (frames, *self.receiver.parse_args())
        self.parsing += count
        try:
            if self._processes is None:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._threads, function, *args)
            try:
                return await self._processes.run(function, *args)
            except WorkerDied:  # killed, out of memory (logged by ParseWorkers): once more
                log.warning("frames whose parse worker died are parsed again")
                return await self._processes.run(function, *args)
        finally:
            self.parsing -= count

    def submit(self, prepared: Prepared) -> asyncio.Future[Outcome]:
        """Hand a parsed message to the writer; messages are committed in the order they are
        submitted. The future holds its outcome once committed."""
        self.committing += 1
        future = self.writer.submit(prepared)
        future.add_done_callback(lambda f: self._answered(prepared, f))
        return future

    def _answered(self, prepared: Prepared, future: asyncio.Future[Outcome]) -> None:
        self.committing -= 1
        if not future.cancelled() and future.exception() is None:
            self.metrics.answered(prepared.inbound.door, future.result())

    @property
    def parse_workers(self) -> ParseWorkers | None:
        """The worker processes; None when messages are parsed in threads."""
        return self._processes

    # FrameHandler of pamfr.transport.server
    async def on_frame(self, payload: bytes, peer) -> bytes | None:
        outcome = await self.receive(Inbound(payload, str(peer), self.door))
        return outcome.ack if outcome.sent else None

    async def on_oversized(self, head: bytes, size: int, peer) -> bytes | None:
        outcome = await self.receive(Inbound(head, str(peer), self.door, size=size))
        return outcome.ack if outcome.sent else None

    def close(self) -> None:
        self.writer.close()
        if self._threads is not None:
            self._threads.shutdown(wait=True)
        if self._processes is not None:
            self._processes.close()
