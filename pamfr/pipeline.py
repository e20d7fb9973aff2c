"""The receiver behind the asyncio doors: parsing off the event loop, one writer thread that
commits the messages of all connections in groups, ACKs released only after the commit."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from pamfr.receiver import Inbound, Outcome, Prepared, Receiver, prepare

log = logging.getLogger(__name__)

_STOP = object()


@dataclass
class _Pending:
    prepared: Prepared
    future: asyncio.Future[Outcome]
    loop: asyncio.AbstractEventLoop


class GroupCommitWriter:
    """One thread that owns every database write; messages ready together share a transaction."""

    def __init__(self, receiver: Receiver, batch_max: int = 64) -> None:
        self.receiver = receiver
        self.batch_max = batch_max
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
            try:
                outcomes = self.receiver.commit([p.prepared for p in pending])
            except BaseException as exc:  # never leave a sender waiting for an ACK
                log.exception("writer failed on a batch of %d", len(pending))
                for p in pending:
                    p.loop.call_soon_threadsafe(_fail, p.future, exc)
                continue
            for p, outcome in zip(pending, outcomes, strict=True):
                p.loop.call_soon_threadsafe(_resolve, p.future, outcome)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()


def _resolve(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():
        future.set_result(outcome)


def _fail(future: asyncio.Future[Outcome], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class AsyncReceiver:
    """Receiver for asyncio callers (the MLLP server, the file-drop watcher)."""

    def __init__(
        self,
        receiver: Receiver,
        *,
        batch_max: int = 64,
        parse_executor: Executor | None = None,
        door: str = "mllp",
    ) -> None:
        self.receiver = receiver
        self.door = door
        self.writer = GroupCommitWriter(receiver, batch_max)
        self._own_executor = parse_executor is None
        self.parse_executor = parse_executor or ThreadPoolExecutor(2, "pamfr-parse")

    async def receive(self, inbound: Inbound) -> Outcome:
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(
            self.parse_executor, prepare, inbound, self.receiver.processing_ids
        )
        return await self.writer.submit(prepared)

    # FrameHandler of pamfr.transport.server
    async def on_frame(self, payload: bytes, peer) -> bytes:
        outcome = await self.receive(Inbound(payload, str(peer), self.door))
        return outcome.ack

    async def on_oversized(self, head: bytes, size: int, peer) -> bytes:
        outcome = await self.receive(Inbound(head, str(peer), self.door, size=size))
        return outcome.ack

    def close(self) -> None:
        self.writer.close()
        if self._own_executor:
            self.parse_executor.shutdown(wait=True)
