"""Parse worker processes that the event loop talks to directly, over one socket each.

A ProcessPoolExecutor moves every request and result through two helper threads of the
daemon (its queue manager and its queue feeder), each waiting for the GIL that the event loop
and the writer thread hold in turn: a message's parse took about four times its CPU time in
wall time. Here the loop writes the request to the worker's socket and reads the result when
the socket is readable, with no thread in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import pickle
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")
# A worker that stopped is replaced at once (the next request would do it too, later), but not
# sooner than this after its stop: one that dies as it starts must not spin the daemon.
REPLACE_AFTER = 1.0


class WorkerDied(Exception):
    """The worker parsing a request stopped (killed, out of memory) before answering."""


def _read_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks, missing = [], size
    while missing:
        chunk = sock.recv(missing)
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def _serve_requests(sock: socket.socket, start: Callable[..., None], start_args: tuple) -> None:
    """A worker's life: start-up, then (function, args) in, (ok, result or exception) out, in
    order, until the daemon closes the socket."""
    start(*start_args)
    while True:
        header = _read_exact(sock, _LENGTH.size)
        if header is None:
            return
        body = _read_exact(sock, _LENGTH.unpack(header)[0])
        if body is None:
            return
        function, args = pickle.loads(body)
        try:
            data = pickle.dumps((True, function(*args)), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            try:
                data = pickle.dumps((False, exc), pickle.HIGHEST_PROTOCOL)
            except Exception:  # one that does not pickle still gets an answer (no values)
                failure = RuntimeError(f"{type(exc).__name__} in the parse worker")
                data = pickle.dumps((False, failure), pickle.HIGHEST_PROTOCOL)
        sock.sendall(_LENGTH.pack(len(data)) + data)


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    sock: socket.socket
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    waiting: deque[asyncio.Future] = field(default_factory=deque)
    listener: asyncio.Task | None = None
    broken: bool = False  # a write failed: the listener may not have seen the end yet


def _stopped(worker: _Worker) -> bool:
    return worker.broken or worker.listener is None or worker.listener.done()


def _reap(worker: _Worker) -> None:
    if worker.process.is_alive():
        worker.process.kill()  # workers ignore SIGTERM (see pipeline._start_worker)
    worker.process.join(5)


class ParseWorkers:
    """`workers` processes (forkserver: the daemon has threads, which fork() must not copy),
    each started with start(*start_args); a request goes to the worker with the fewest
    requests in hand, and a worker that dies is replaced (by the next request, or a second
    after it stopped, whichever comes first)."""

    def __init__(self, workers: int, start: Callable[..., None], start_args: tuple) -> None:
        self.size = workers
        self._start = start
        self._start_args = start_args
        self._context = multiprocessing.get_context("forkserver")
        self._workers: list[_Worker] = []
        self._replacing = asyncio.Lock()
        self._closing = False
        self.restarts = 0  # workers replaced after they stopped
        self._replacements: set[asyncio.Task] = set()

    @property
    def alive(self) -> int:
        """Workers running and answering (a stopped one counts again once replaced)."""
        return sum(1 for w in self._workers if not _stopped(w) and w.process.is_alive())

    async def start(self) -> None:
        """Start the workers and wait until each has finished its start-up."""
        self._workers = [await self._spawn() for _ in range(self.size)]
        await asyncio.gather(*(self._call(w, os.getpid, ()) for w in self._workers))

    async def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        process = self._context.Process(
            target=_serve_requests,
            args=(theirs, self._start, self._start_args),
            name="pamfr-parse",
            daemon=True,
        )
        process.start()
        theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        worker = _Worker(process, ours, reader, writer)
        worker.listener = asyncio.create_task(self._listen(worker))
        return worker

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """function(*args) in a worker; WorkerDied when its worker stops before answering."""
        if self._closing:
            raise RuntimeError("the parse workers are closed")
        if not self._workers:
            async with self._replacing:  # callers that come before start() share one start
                if not self._workers:
                    await self.start()
        index, worker = min(enumerate(self._workers), key=lambda iw: len(iw[1].waiting))
        if _stopped(worker):
            worker = await self._replace(index)
        return await self._call(worker, function, args)

    async def _replace(self, index: int) -> _Worker:
        """The worker at `index`, replaced if it stopped (once, whoever else asks)."""
        async with self._replacing:
            worker = self._workers[index]
            if _stopped(worker) and not self._closing:
                _reap(worker)
                worker = self._workers[index] = await self._spawn()
                self.restarts += 1
                log.warning("parse worker replaced (%d replaced since start)", self.restarts)
            return worker

    async def _replace_later(self, worker: _Worker) -> None:
        await asyncio.sleep(REPLACE_AFTER)
        for index, current in enumerate(self._workers):
            if current is worker:
                await self._replace(index)

    async def _call(self, worker: _Worker, function: Callable[..., Any], args: tuple) -> Any:
        # The frame first: a request that does not pickle must not leave an answer expected.
        data = pickle.dumps((function, args), pickle.HIGHEST_PROTOCOL)
        answer: asyncio.Future = asyncio.get_running_loop().create_future()
        worker.waiting.append(answer)
        try:
            worker.writer.write(_LENGTH.pack(len(data)) + data)
            await worker.writer.drain()
        except (OSError, RuntimeError) as exc:  # the worker is gone; its listener may not know
            worker.broken = True
            self._fail_waiting(worker)
            raise WorkerDied(type(exc).__name__) from exc
        ok, result = await answer
        if not ok:
            raise result
        return result

    async def _listen(self, worker: _Worker) -> None:
        ended = True  # False when cancelled (the loop is closing): nothing to replace
        try:
            while True:
                header = await worker.reader.readexactly(_LENGTH.size)
                body = await worker.reader.readexactly(_LENGTH.unpack(header)[0])
                result = pickle.loads(body)  # before popleft: a failure leaves it expected
                answer = worker.waiting.popleft()
                if not answer.done():
                    answer.set_result(result)
        except (asyncio.IncompleteReadError, OSError):
            if not self._closing:
                worker.process.join(0)  # reaps it if it is gone, without waiting
                log.error("a parse worker stopped (exit code %s)", worker.process.exitcode)
        except Exception as exc:  # an answer that does not unpickle: not trusted again
            log.error("a parse worker sent an unreadable answer (%s)", type(exc).__name__)
        except asyncio.CancelledError:
            ended = False
            raise
        finally:
            self._fail_waiting(worker)
            worker.writer.close()
            if ended and not self._closing:
                task = asyncio.get_running_loop().create_task(self._replace_later(worker))
                self._replacements.add(task)
                task.add_done_callback(self._replacements.discard)

    @staticmethod
    def _fail_waiting(worker: _Worker) -> None:
        while worker.waiting:
            answer = worker.waiting.popleft()
            if not answer.done():
                answer.set_exception(WorkerDied("the parse worker stopped before answering"))

    def close(self) -> None:
        """Shut the sockets down (each worker then ends its loop) and wait for the workers.
        Callable from any thread: it touches only the sockets and the processes."""
        self._closing = True
        for worker in self._workers:
            with contextlib.suppress(OSError):  # already closed: the worker stopped
                worker.sock.shutdown(socket.SHUT_RDWR)
        for worker in self._workers:
            worker.process.join(5)
            _reap(worker)
        self._workers = []
