"""Replay: message files sent to an MLLP receiver (--to) or applied to a store (--local).

Both ways go through the one receiver path (over the wire, or Receiver.prepare/commit here);
nothing here parses, checks or stores a message itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext
from typing import Any

from sqlalchemy import Engine

from pamfr.hl7.er7 import read_header
from pamfr.hl7.errors import MessageRejected
from pamfr.hl7.frame import Door, Inbound, Prepared
from pamfr.hl7.prepare import prepare
from pamfr.ingest.filedrop import file_messages
from pamfr.ingest.files import UnreadableFile
from pamfr.ingest.sender import ack_summary, to_cr_segments
from pamfr.pipeline import parse_pool
from pamfr.receiver import Receiver
from pamfr.store.readside import all_patient_ids, patient_view
from pamfr.transport.client import MLLPClient, MLLPError

log = logging.getLogger(__name__)

DOOR = Door.REPLAY
POSITIVE = ("AA", "CA")
NO_ACK = "none"  # the receiver did not answer (timeout, connection lost)
NOT_SENT = "not-sent"  # an earlier message of the same file got no answer
SKIPPED_SUFFIXES = (".ack", ".error")  # what the file-drop door writes beside a file


# -- input ---------------------------------------------------------------------------------


def collect_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given, folders walked recursively in sorted order.

    Inside folders, dot-files and the .ack/.error files of the file-drop door are left out,
    so a done/ folder can be replayed as it is.
    """
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            files.append(path)
            continue
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files.extend(
                Path(root) / n
                for n in sorted(names)
                if not n.startswith(".") and not n.endswith(SKIPPED_SUFFIXES)
            )
    return files


def load_messages(path: Path) -> list[bytes]:
    """The messages of one file; UnreadableFile (with the reason) when it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"cannot read the file: {exc.strerror or exc}") from None
    return file_messages(data)


class ControlIdRewriter:
    """A fresh MSH-10 for every message: a random run token and a counter (18 characters)."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token or uuid.uuid4().hex[:10]
        self.count = 0

    def __call__(self, raw: bytes) -> bytes:
        self.count += 1
        return rewrite_control_id(raw, f"{self.token}{self.count:08d}")


def rewrite_control_id(raw: bytes, control_id: str) -> bytes:
    """The message with MSH-10 replaced and every other byte unchanged (as is, if no MSH)."""
    start = raw.find(b"MSH")
    if start < 0 or len(raw) < start + 8:
        return raw
    sep = raw[start + 3 : start + 4]
    end = len(raw)
    for eol in (b"\r", b"\n"):
        pos = raw.find(eol, start)
        if pos != -1:
            end = min(end, pos)
    fields = raw[start:end].split(sep)
    if len(fields) < 10:
        return raw
    fields[9] = control_id.encode("ascii")
    return raw[:start] + sep.join(fields) + raw[end:]


def _header_facts(raw: bytes) -> tuple[str, str]:
    """(control id, event) as read from the message itself; empty when unreadable."""
    try:
        header = read_header(raw)
    except MessageRejected:
        return "", ""
    return header.control_id, header.event


# -- results -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageResult:
    file: str
    index: int  # 1-based, within its file
    control_id: str  # as sent
    event: str
    ack_code: str  # MSA-1, or NO_ACK / NOT_SENT
    errors: tuple[str, ...] = ()  # "code location text" of each ERR segment, or the failure
    original_control_id: str | None = None  # with --rewrite-control-ids
    duplicate: bool = False

    @property
    def positive(self) -> bool:
        return self.ack_code in POSITIVE


@dataclass
class Tally:
    messages: int = 0
    duplicates: int = 0
    ack_codes: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    err_codes: Counter[str] = field(default_factory=Counter)
    not_aa: list[MessageResult] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def add(self, r: MessageResult) -> None:
        self.messages += 1
        self.duplicates += r.duplicate
        self.ack_codes[r.ack_code] += 1
        self.events[r.event or "-"] += 1
        if r.ack_code not in (NO_ACK, NOT_SENT):
            for err in r.errors:
                self.err_codes[err.split(" ", 1)[0] or "-"] += 1
        if not r.positive:
            self.not_aa.append(r)

    def merge(self, other: Tally) -> None:
        self.messages += other.messages
        self.duplicates += other.duplicates
        self.ack_codes.update(other.ack_codes)
        self.events.update(other.events)
        self.err_codes.update(other.err_codes)
        self.not_aa.extend(other.not_aa)
        self.unreadable.extend(other.unreadable)


@dataclass
class Summary:
    mode: str  # local | mllp
    target: str
    files: int
    tally: Tally
    elapsed: float
    differences: list[dict[str, Any]] | None = None  # with --expect

    @property
    def all_aa(self) -> bool:
        return not self.tally.not_aa and not self.tally.unreadable

    @property
    def rate(self) -> float:
        return self.tally.messages / self.elapsed if self.elapsed > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        t = self.tally
        out: dict[str, Any] = {
            "mode": self.mode,
            "target": self.target,
            "files": self.files,
            "messages": t.messages,
            "elapsed_s": round(self.elapsed, 3),
            "messages_per_s": round(self.rate, 1),
            "all_aa": self.all_aa,
            "duplicates": t.duplicates,
            "ack_codes": dict(t.ack_codes.most_common()),
            "events": dict(t.events.most_common()),
            "err_codes": dict(t.err_codes.most_common()),
            "not_aa": [
                {
                    "file": r.file,
                    "index": r.index,
                    "control_id": r.control_id,
                    "original_control_id": r.original_control_id,
                    "event": r.event,
                    "ack_code": r.ack_code,
                    "errors": list(r.errors),
                }
                for r in t.not_aa
            ],
            "unreadable": [{"file": f, "reason": why} for f, why in t.unreadable],
        }
        if self.differences is not None:
            out["expect"] = {"match": not self.differences, "differences": self.differences}
        return out

    def render(self) -> str:
        t = self.tally

        def counts(c: Counter[str]) -> str:
            return ", ".join(f"{k} {n}" for k, n in c.most_common()) or "-"

        lines = [
            f"replayed {t.messages} message(s) from {self.files} file(s) "
            f"{'into' if self.mode == 'local' else 'to'} {self.target} ({self.mode}) "
            f"in {self.elapsed:.1f}s: {self.rate:.1f} messages/s",
            f"ACK codes: {counts(t.ack_codes)}"
            + (f" ({t.duplicates} duplicate(s))" if t.duplicates else ""),
            f"events:    {counts(t.events)}",
            f"ERR codes: {counts(t.err_codes)}",
        ]
        for f, why in t.unreadable:
            lines.append(f"unreadable file {f}: {why}")
        if t.not_aa:
            lines.append(f"not AA ({len(t.not_aa)}):")
            for r in t.not_aa:
                was = f" (was {r.original_control_id})" if r.original_control_id else ""
                lines.append(
                    f"  {r.file} #{r.index} control_id={r.control_id or '-'}{was} "
                    f"{r.ack_code} {' | '.join(r.errors)}".rstrip()
                )
        if self.differences is not None:
            if self.differences:
                lines.append(f"expected state: {len(self.differences)} difference(s)")
                lines.extend(f"  {render_difference(d)}" for d in self.differences)
            else:
                lines.append("expected state: identical")
        return "\n".join(lines)


# -- progress ------------------------------------------------------------------------------


class Progress:
    """A tqdm bar on a terminal, else a plain line on stderr every `every` seconds."""

    def __init__(self, total: int, *, every: float = 5.0, enabled: bool = True) -> None:
        self.total = total
        self.done = 0
        self.every = every
        self.enabled = enabled
        self.started = time.perf_counter()
        self._last = self.started
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="msg", file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if self.enabled and now - self._last >= self.every:
            self._last = now
            rate = self.done / (now - self.started)
            pct = 100 * self.done / self.total if self.total else 100.0
            print(
                f"replay: {self.done}/{self.total} messages ({pct:.0f}%), {rate:.1f}/s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def count_messages(files: Sequence[Path]) -> int:
    total = 0
    for path in files:
        with contextlib.suppress(UnreadableFile):
            total += len(load_messages(path))
    return total


# -- local ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Item:
    file: str
    index: int
    raw: bytes
    original_control_id: str | None


def _items(
    files: Sequence[Path], tally: Tally, rewrite: ControlIdRewriter | None
) -> Iterator[_Item]:
    for path in files:
        try:
            messages = load_messages(path)
        except UnreadableFile as exc:
            tally.unreadable.append((str(path), str(exc)))
            continue
        for i, raw in enumerate(messages, 1):
            original = None
            if rewrite is not None:
                original = _header_facts(raw)[0]
                raw = rewrite(raw)
            yield _Item(str(path), i, raw, original)


def _chunks(items: Iterator[_Item], size: int) -> Iterator[list[_Item]]:
    chunk: list[_Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def prepare_many(inbounds: list[Inbound], parse_args: tuple) -> list[Prepared]:
    """Receiver.prepare for a chunk, in a worker process."""
    return [prepare(i, *parse_args) for i in inbounds]


def _result(item: _Item, ack: bytes, control_id: str, event: str, duplicate: bool):
    code, errors = ack_summary(ack)
    return MessageResult(
        item.file,
        item.index,
        control_id,
        event,
        code,
        tuple(errors),
        item.original_control_id,
        duplicate,
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
    """Apply every message, in file order, through the receiver.

    With workers > 0, messages are prepared (decoded, parsed: the CPU part) in that many
    processes while this one commits them in order, `batch` per transaction (group commit).
    With workers == 0, each message is handled and committed on its own.
    """
    tally = Tally()
    items = _items(files, tally, rewrite)

    def record(item: _Item, outcome) -> None:
        tally.add(_result(item, outcome.ack, outcome.control_id, outcome.event, outcome.duplicate))
        if progress is not None:
            progress.update()

    if workers <= 0:
        for item in items:
            record(item, receiver.handle(item.raw, item.file, DOOR))
        return tally

    in_flight: deque[tuple[list[_Item], Future[list[Prepared]]]] = deque()
    chunks = _chunks(items, batch)
    with parse_pool(workers) as pool:

        def submit() -> bool:
            chunk = next(chunks, None)
            if chunk is None:
                return False
            inbounds = [Inbound(it.raw, it.file, DOOR) for it in chunk]
            in_flight.append((chunk, pool.submit(prepare_many, inbounds, receiver.parse_args())))
            return True

        while len(in_flight) < 2 * workers + 1 and submit():
            pass
        while in_flight:
            chunk, future = in_flight.popleft()
            prepared = future.result()
            submit()
            for item, outcome in zip(chunk, receiver.commit(prepared), strict=True):
                record(item, outcome)
    return tally


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


def patient_keys(raw: bytes) -> frozenset[bytes]:
    """The identifiers a message is about: every repetition of PID-3 (each PID: A24/A37 carry
    two) and of MRG-1, as value and assigning authority. Empty when there is none to read."""
    start = raw.find(b"MSH")
    if start < 0 or len(raw) < start + 8:
        return frozenset()
    field_sep = raw[start + 3 : start + 4]
    component, repetition = raw[start + 4 : start + 5], raw[start + 5 : start + 6]
    keys: set[bytes] = set()
    for segment in raw[start:].replace(b"\n", b"\r").split(b"\r"):
        name = segment[:4]
        if name == b"PID" + field_sep:
            position = 3
        elif name == b"MRG" + field_sep:
            position = 1
        else:
            continue
        fields = segment.split(field_sep)
        if len(fields) <= position:
            continue
        for rep in fields[position].split(repetition):
            parts = rep.split(component)
            if parts[0]:
                authority = parts[3] if len(parts) > 3 else b""
                keys.add(parts[0] + b"^" + authority)
    return frozenset(keys)


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
                messages = await asyncio.to_thread(load_messages, path)
            except UnreadableFile as exc:
                tallies[n].unreadable.append((str(path), str(exc)))
                continue
            for i, raw in enumerate(messages, 1):
                original = None
                if rewrite is not None:
                    original = _header_facts(raw)[0]
                    raw = rewrite(raw)
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


# -- expected state ------------------------------------------------------------------------

VOLATILE = ("id", "created_at", "updated_at")


def store_state(engine: Engine) -> list[dict[str, Any]]:
    """Every patient, as `pamfr patient show --json` prints it."""
    with engine.connect() as conn:
        return [patient_view(conn, pid) for pid in all_patient_ids(conn)]


def _ipp_keys(view: dict[str, Any]) -> list[str]:
    return sorted(
        f"{i.get('oid') or i.get('authority') or ''}|{i['value']}"
        for i in view.get("identifiers", [])
        if i.get("type") == "PI"
    )


def _label(view: dict[str, Any]) -> str:
    keys = _ipp_keys(view)
    if keys:
        return "IPP " + ", ".join(keys)
    return f"patient id {view.get('id')} (no IPP)"


def _normalize(view: dict[str, Any], ipps_by_id: dict[Any, list[str]]) -> dict[str, Any]:
    """The view without its volatile keys, ids of other patients replaced by their IPPs."""

    def ref(pid: Any) -> Any:
        return ipps_by_id.get(pid, f"unknown patient id {pid}")

    out = {k: v for k, v in view.items() if k not in VOLATILE}
    out["identifiers"] = sorted(
        view.get("identifiers", []), key=lambda i: json.dumps(i, sort_keys=True)
    )
    if view.get("merged_into") is not None:
        out["merged_into"] = ref(view["merged_into"])
    if "links" in view:
        out["links"] = sorted((ref(x) for x in view["links"] or []), key=json.dumps)
    return out


def compare_state(
    expected: list[dict[str, Any]], actual: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Differences between two lists of patient views, patients matched by their IPPs."""
    exp_ipps = {v.get("id"): _ipp_keys(v) for v in expected}
    act_ipps = {v.get("id"): _ipp_keys(v) for v in actual}
    by_ipp: dict[str, int] = {}
    by_ins: dict[str, int] = {}
    for n, view in enumerate(actual):
        for key in _ipp_keys(view):
            by_ipp.setdefault(key, n)
        if view.get("ins") and not _ipp_keys(view):
            by_ins.setdefault(view["ins"]["value"], n)
    matched: set[int] = set()
    diffs: list[dict[str, Any]] = []
    for exp in expected:
        candidates = Counter(by_ipp[k] for k in _ipp_keys(exp) if k in by_ipp)
        ins = (exp.get("ins") or {}).get("value")
        if not candidates and not _ipp_keys(exp) and ins in by_ins:
            candidates[by_ins[ins]] = 1
        found = next((n for n, _ in candidates.most_common() if n not in matched), None)
        if found is None:
            diffs.append(
                {"patient": _label(exp), "key": None, "expected": "present", "actual": None}
            )
            continue
        matched.add(found)
        e, a = _normalize(exp, exp_ipps), _normalize(actual[found], act_ipps)
        for key in sorted(set(e) | set(a)):
            if e.get(key, "<absent>") != a.get(key, "<absent>"):
                diffs.append(
                    {
                        "patient": _label(exp),
                        "key": key,
                        "expected": e.get(key, "<absent>"),
                        "actual": a.get(key, "<absent>"),
                    }
                )
    for n, view in enumerate(actual):
        if n not in matched:
            diffs.append(
                {"patient": _label(view), "key": None, "expected": None, "actual": "present"}
            )
    return diffs


def render_difference(d: dict[str, Any]) -> str:
    if d["key"] is None:
        where = "missing from the store" if d["actual"] is None else "not expected"
        return f"{d['patient']}: {where}"
    return (
        f"{d['patient']}: {d['key']}: expected {json.dumps(d['expected'], ensure_ascii=False)}, "
        f"found {json.dumps(d['actual'], ensure_ascii=False)}"
    )


def load_expected(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(v, dict) for v in data):
        raise ValueError("expected a JSON list of patient objects (pamfr patient show --json)")
    return data
