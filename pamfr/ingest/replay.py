"""Replay: message files sent to an MLLP receiver (--to) or applied to a store (--local).

Both ways go through the one receiver path (over the wire, or Receiver.prepare/commit here);
nothing here parses, checks or stores a message itself. What is read of the files is in
ingest/messagesets, what is reported in ingest/report, the expected state in ingest/expected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext

from pamfr.hl7.frame import Door, Inbound, Outcome, Prepared
from pamfr.ingest.files import UnreadableFile
from pamfr.ingest.messagesets import (
    ControlIdRewriter,
    SetMessage,
    patient_keys,
    read_file,
)
from pamfr.ingest.messagesets import header_facts as _header_facts
from pamfr.ingest.report import NO_ACK, NOT_SENT, MessageResult, Progress, Tally
from pamfr.ingest.sender import ack_summary, to_cr_segments
from pamfr.path.pipeline import AsyncReceiver
from pamfr.path.receiver import Receiver
from pamfr.transport.client import MLLPClient, MLLPError

log = logging.getLogger(__name__)

DOOR = Door.REPLAY


# -- local ---------------------------------------------------------------------------------


def _items(
    files: Sequence[Path], tally: Tally, rewrite: ControlIdRewriter | None
) -> Iterator[SetMessage]:
    for path in files:
        try:
            yield from read_file(path, rewrite)
        except UnreadableFile as exc:
            tally.unreadable.append((str(path), str(exc)))


def _result(item: SetMessage, outcome: Outcome) -> MessageResult:
    if outcome.duplicate:  # answered with the first message's stored ACK: its ERRs are there
        errors = tuple(ack_summary(outcome.ack)[1])
    else:
        errors = tuple(f"{x.code} {x.location} {x.text}".strip() for x in outcome.problems)
    return MessageResult(
        item.file,
        item.index,
        outcome.control_id,
        outcome.event,
        outcome.msa_code,
        errors,
        item.original_control_id,
        outcome.duplicate,
    )


def replay_local(
    files: Sequence[Path],
    receiver: Receiver,
    *,
    workers: int = 2,
    batch: int = 64,
    rewrite: ControlIdRewriter | None = None,
    progress: Progress | None = None,
) -> Tally:
    """Apply every message, in file order, through the path the daemon's doors take: parsed
    ahead in `workers` parse processes (threads when 0), committed in file order by the
    group-commit writer, up to `batch` per transaction."""
    tally = Tally()

    def record(item: SetMessage, outcome: Outcome) -> None:
        tally.add(_result(item, outcome))
        if progress is not None:
            progress.update()

    runner = AsyncReceiver(
        receiver, batch_max=batch, parse_workers=workers, door=DOOR, stop_on_error=True
    )
    try:
        asyncio.run(_apply_in_order(_items(files, tally, rewrite), runner, workers, batch, record))
    finally:
        runner.close()
    return tally


_CHUNK = 16  # messages a parse worker reads in one round trip


async def _apply_in_order(
    items: Iterator[SetMessage],
    runner: AsyncReceiver,
    workers: int,
    batch: int,
    record: Callable[[SetMessage, Outcome], None],
) -> None:
    """Parse chunks ahead of the writer, in every worker at once; submit the messages to
    the writer in file order, with at most two batches waiting for it (memory stays flat
    however long the replay). A failed commit stops the replay: nothing after it is applied
    (the writer's stop_on_error) and the exception goes up once every submitted message is
    settled."""
    await runner.start()
    parsing: deque[tuple[list[SetMessage], asyncio.Future[list[Prepared]]]] = deque()
    committing: deque[tuple[SetMessage, asyncio.Future[Outcome]]] = deque()
    ahead = 2 * max(workers, 1) + 1

    async def settle_oldest() -> None:
        done, future = committing.popleft()
        record(done, await future)

    async def submit_oldest() -> None:
        chunk, parsed = parsing.popleft()
        for item, prepared in zip(chunk, await parsed, strict=True):
            committing.append((item, runner.submit(prepared)))
        while committing and (committing[0][1].done() or len(committing) > 2 * batch):
            await settle_oldest()

    def parse(chunk: list[SetMessage]) -> None:
        inbounds = [Inbound(it.raw, it.file, DOOR) for it in chunk]
        parsing.append((chunk, asyncio.ensure_future(runner.parse_many(inbounds))))

    try:
        chunk: list[SetMessage] = []
        for item in items:
            chunk.append(item)
            if len(chunk) == _CHUNK:
                parse(chunk)
                chunk = []
                if len(parsing) >= ahead:
                    await submit_oldest()
        if chunk:
            parse(chunk)
        while parsing:
            await submit_oldest()
        while committing:
            await settle_oldest()
    except BaseException:
        for _, parsed in parsing:
            parsed.cancel()
        for _, future in committing:
            with contextlib.suppress(BaseException):
                await future
        raise


# -- over MLLP -----------------------------------------------------------------------------


async def _send_one(
    client_box: list[MLLPClient | None],
    host: str,
    port: int,
    raw: bytes,
    timeout: float,
    ssl: SSLContext | None = None,
) -> bytes:
    """Send and wait for the ACK; on a lost connection or a timeout, reconnect and resend once
    (the receiver's duplicate control makes the resend safe)."""
    payload = to_cr_segments(raw)
    for attempt in (1, 2):
        client = client_box[0]
        try:
            if client is None:
                client = await MLLPClient.connect(host, port, timeout=timeout, ssl=ssl)
                client_box[0] = client
            return await client.send(payload, timeout=timeout)
        except (MLLPError, OSError) as exc:
            if client is not None:
                await client.close()
            client_box[0] = None
            if attempt == 2:
                raise
            log.warning("no ACK from %s:%d (%s), reconnecting and resending", host, port, exc)
    raise AssertionError("unreachable")


class TargetUnreachable(Exception):
    """The receiver of --to does not accept a connection: nothing was sent."""


@dataclass
class _Pending:
    file: int
    index: int
    raw: bytes
    control_id: str
    event: str
    original: str | None
    after: list[asyncio.Event]  # the messages before it about one of its patients
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def replay_mllp(
    files: Sequence[Path],
    host: str,
    port: int,
    *,
    connections: int = 1,
    timeout: float = 30.0,
    rewrite: ControlIdRewriter | None = None,
    progress: Progress | None = None,
    ssl: SSLContext | None = None,
) -> Tally:
    """Send every message over MLLP (over TLS with `ssl`) on up to `connections` connections,
    each waiting for its ACK. The messages of one patient keep the order of the files: a
    message is sent only once every earlier message sharing one of its identifiers (PID-3,
    MRG-1; see patient_keys) has its ACK. Messages of different patients go in parallel.
    A message without an ACK (after one resend) leaves the rest of its file not sent.
    TargetUnreachable when the first connection is refused: nothing is sent."""
    try:
        first = await MLLPClient.connect(host, port, timeout=timeout, ssl=ssl)
    except (OSError, MLLPError) as exc:
        raise TargetUnreachable(f"cannot connect to {host}:{port}: {_reason(exc)}") from None
    pool: asyncio.Queue[list[MLLPClient | None]] = asyncio.Queue()
    boxes: list[list[MLLPClient | None]] = [[first]] + [[None] for _ in range(connections - 1)]
    for box in boxes:
        pool.put_nowait(box)
    # Messages are read file by file and sent within a window: memory stays bounded, and the
    # earliest message of the window never waits for one outside it.
    window = asyncio.Semaphore(max(64, 16 * connections))
    results: dict[tuple[int, int], MessageResult] = {}
    tallies = [Tally() for _ in files]
    failed: dict[int, str] = {}  # file -> why the rest of it is not sent
    last_of: dict[bytes, asyncio.Event] = {}
    tasks: set[asyncio.Task] = set()

    async def send(item: _Pending) -> None:
        try:
            for event in item.after:
                await event.wait()
            path = str(files[item.file])
            box = await pool.get()
            try:
                why = failed.get(item.file)
                if why is not None:
                    result = MessageResult(
                        path, item.index, item.control_id, item.event, NOT_SENT, (why,),
                        item.original,
                    )  # fmt: skip
                else:
                    ack = await _send_one(box, host, port, item.raw, timeout, ssl)
                    code, errors = ack_summary(ack)
                    result = MessageResult(
                        path, item.index, item.control_id, item.event, code, tuple(errors),
                        item.original,
                    )  # fmt: skip
            except (MLLPError, OSError) as exc:
                failed.setdefault(item.file, f"message #{item.index} got no ACK")
                result = MessageResult(
                    path, item.index, item.control_id, item.event, NO_ACK, (str(exc),),
                    item.original,
                )  # fmt: skip
            finally:
                pool.put_nowait(box)
            results[(item.file, item.index)] = result
            if progress is not None:
                progress.update()
        finally:
            item.done.set()
            window.release()

    try:
        for n, path in enumerate(files):
            try:
                messages = await asyncio.to_thread(read_file, path, rewrite)
            except UnreadableFile as exc:
                tallies[n].unreadable.append((str(path), str(exc)))
                continue
            for m in messages:
                i, raw, original = m.index, m.raw, m.original_control_id
                control_id, event = _header_facts(raw)
                # one connection: every message after the one before it, as in the files
                keys = patient_keys(raw) if connections > 1 else frozenset([b""])
                item = _Pending(n, i, raw, control_id, event, original, [])
                item.after = list(
                    {id(last_of[k]): last_of[k] for k in keys if k in last_of}.values()
                )
                for key in keys:
                    last_of[key] = item.done
                await window.acquire()
                task = asyncio.create_task(send(item))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        for box in boxes:
            if box[0] is not None:
                await box[0].close()
    for (n, _), result in sorted(results.items()):
        tallies[n].add(result)
    tally = Tally()
    for part in tallies:
        tally.merge(part)
    return tally


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
