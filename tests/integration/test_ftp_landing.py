"""Files landing through a real FTP server (pyftpdlib on 127.0.0.1) as GAMs upload them: a
direct STOR in slow chunks with pauses longer than the quiet period, STOR under a temporary
name then RNFR/RNTO, a file empty at first, an empty file, a truncated batch. Nothing
half-written is ever applied; every message of every file is applied exactly once: with
inotify's close of the writer, also when the FTP server's process is hidden from pamfr (as one
running as another user is), and with polling only. The quiet period alone, the rule before
close events and content checks, would have taken the paused upload half-written."""

from __future__ import annotations

import ftplib
import io
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pamfr.hl7.samples import Person, message
from pamfr.ingest.closes import Close, Signature, signature_of
from pamfr.ingest.files import incomplete_reason
from pamfr.ingest.inbox import Inbox, Listed
from pamfr.ingest.inotify import CloseWatch
from pamfr.settings.config import FiledropSettings
from tests.integration.test_filedrop import log_rows, running_watcher, wait_for

QUIET = 0.4
PAUSE = 1.5  # longer than the quiet period: the file sits unchanged, half written
LIMIT = 4.0  # [filedrop] incomplete_timeout of the test


@contextmanager
def ftp_server(root: Path) -> Iterator[int]:
    """The FTP server in a process of its own (tests/ftp_server.py): its port."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.ftp_server", str(root)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    try:
        yield int(server.stdout.readline())
    finally:
        server.terminate()
        server.wait(10)


class SlowUpload(io.RawIOBase):
    """What ftplib reads for STOR: the content in chunks, pausing at the given offsets (the
    bytes before an offset are sent, those after it wait)."""

    def __init__(self, data: bytes, pauses: dict[int, float]) -> None:
        self.data, self.pos, self.pauses = data, 0, dict(pauses)

    def read(self, size: int = -1) -> bytes:
        if self.pos in self.pauses:
            time.sleep(self.pauses.pop(self.pos))
        cut = min((p for p in self.pauses if p > self.pos), default=len(self.data))
        end = min(len(self.data), self.pos + (size if size > 0 else len(self.data)), cut)
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk


def upload(port: int, name: str, data: bytes, pauses: dict[int, float] | None = None) -> None:
    with ftplib.FTP() as ftp:
        ftp.connect("127.0.0.1", port, timeout=30)
        ftp.login("gam", "secret")
        ftp.storbinary(f"STOR {name}", SlowUpload(data, pauses or {}), blocksize=4096)


def file_of(prefix: str, count: int) -> tuple[bytes, list[str]]:
    ids = [f"{prefix}-{n}" for n in range(1, count + 1)]
    text = "".join(message("A28", Person(f"{prefix}{n}"), i, sep="\n") for n, i in enumerate(ids))
    return text.encode(), ids


def big_upload() -> tuple[bytes, list[str], dict[int, float]]:
    """100 messages, paused once in the middle of a segment of message 29, once right after a
    segment end (the content then looks complete: only the writer still at work tells)."""
    big, ids = file_of("BIG", 100)
    starts = [big.index(f"|BIG-{n}|".encode()) for n in (29, 60)]
    mid_segment = starts[0] + 5
    segment_end = big.index(b"\n", starts[1]) + 1
    assert incomplete_reason(big[:mid_segment]) is not None
    assert incomplete_reason(big[:segment_end]) is None
    return big, ids, {mid_segment: PAUSE, segment_end: PAUSE}


def hidden_from_proc(path: Path) -> bool:
    """No process is seen writing: what pamfr sees of an FTP server run by another user."""
    return False


WATCHERS = {
    "inotify": ({}, None),
    "inotify, the FTP server hidden from /proc": ({}, hidden_from_proc),
    "polling": ({"close_events": False}, None),
}


@pytest.mark.parametrize("watcher_kind", list(WATCHERS))
def test_ftp_uploads_are_taken_only_when_complete(sqlite_url, engine, tmp_path, watcher_kind):
    extra, writer_open = WATCHERS[watcher_kind]
    inbox = tmp_path / "in"
    inbox.mkdir()
    big, big_ids, pauses = big_upload()
    renamed, renamed_ids = file_of("REN", 5)
    late, late_ids = file_of("LATE", 3)
    batch, batch_ids = file_of("BAT", 4)
    truncated = b"FHS|^~\\&|GAM\nBHS|^~\\&|GAM\n" + batch  # no BTS, no FTS
    settings = dict(quiet_period=QUIET, poll_interval=0.05, incomplete_timeout=LIMIT, **extra)
    done, error = inbox / "done", inbox / "error"
    with (
        ftp_server(inbox) as port,
        running_watcher(sqlite_url, inbox, writer_open=writer_open, **settings) as watcher,
    ):
        upload(port, "a-big.hl7", big, pauses)
        with ftplib.FTP() as ftp:  # STOR under a temporary name, then RNFR/RNTO
            ftp.connect("127.0.0.1", port, timeout=30)
            ftp.login("gam", "secret")
            ftp.storbinary("STOR b-renamed.hl7.part", io.BytesIO(renamed))
            time.sleep(QUIET * 2)
            ftp.rename("b-renamed.hl7.part", "b-renamed.hl7")
        upload(port, "c-late.hl7", late, {0: PAUSE})  # 0 bytes for a while, then filled
        sent = time.monotonic()
        upload(port, "d-empty.hl7", b"")
        upload(port, "e-truncated.hl7", truncated)
        wait_for(lambda: (error / "d-empty.hl7.error").exists(), 60, "the limit")
        empty_waited = time.monotonic() - sent
        wait_for(lambda: (error / "e-truncated.hl7.error").exists(), 60, "the limit")
        wait_for(lambda: (done / "c-late.hl7").exists(), 60, "the files to be taken")
        mode = watcher.inboxes[0].mode

    assert sorted(p.name for p in done.iterdir()) == sorted(
        f"{n}{x}" for n in ("a-big.hl7", "b-renamed.hl7", "c-late.hl7") for x in ("", ".ack")
    )
    assert sorted(p.name for p in error.iterdir()) == sorted(
        f"{n}{x}" for n in ("d-empty.hl7", "e-truncated.hl7") for x in ("", ".error")
    )
    assert (done / "a-big.hl7").read_bytes() == big
    # Empty from its STOR on: it waited the limit out, then went to error/ saying so.
    assert empty_waited >= LIMIT
    said = re.fullmatch(
        r"d-empty\.hl7: incomplete, unchanged for (\d+) s: the file is empty \(0 bytes\)\n",
        (error / "d-empty.hl7.error").read_text(),
    )
    assert said and int(said[1]) >= LIMIT
    assert re.fullmatch(
        r"e-truncated\.hl7: incomplete, unchanged for \d+ s: the last batch has no BTS trailer\n",
        (error / "e-truncated.hl7.error").read_text(),
    )
    rows = log_rows(engine)
    engine.dispose()
    applied = Counter(r["control_id"] for r in rows if r["duplicate_of"] is None)
    assert applied == Counter(big_ids + renamed_ids + late_ids)  # each once, nothing else
    assert {r["outcome"] for r in rows} == {"AA"}
    assert not set(batch_ids) & {r["control_id"] for r in rows}
    assert mode == ("polling" if extra.get("close_events") is False else "inotify")


@dataclass(frozen=True)
class Sample:
    at: float
    signature: Signature
    close: Close  # what inotify said of its writer then
    uploading: bool


def test_the_quiet_period_alone_takes_a_paused_upload_half_written(tmp_path):
    """The same paused STOR, its size and mtime and inotify's events sampled as it lands, then
    given to the pure settle decision (Inbox.decide): with the quiet period alone (no close
    information: the rule before close events, /proc and content checks) the file is ready
    while half written, even at a point where its content looks complete; with the close of
    the writer it is ready only once the upload is over."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    path = inbox / "a-big.hl7"
    big, _, pauses = big_upload()
    samples: list[Sample] = []
    uploading, stop = threading.Event(), threading.Event()
    closes = CloseWatch()
    events = closes.watch(inbox)

    def sample() -> None:
        while not stop.is_set():
            try:
                sig = signature_of(path)
            except FileNotFoundError:
                sig = None
            if sig is not None:
                close = events.close_of(path.name, sig)
                samples.append(Sample(time.monotonic(), sig, close, uploading.is_set()))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    try:
        with ftp_server(inbox) as port:
            uploading.set()
            sampler.start()
            upload(port, path.name, big, pauses)
            uploading.clear()
            time.sleep(QUIET * 3)
    finally:
        stop.set()
        sampler.join(10)
        closes.stop()

    old, new = (Inbox(inbox, FiledropSettings(quiet_period=QUIET)) for _ in range(2))
    old_half, new_half, new_whole = [], [], []
    for s in samples:
        old_ready = old.decide([Listed(path, s.signature, Close.UNKNOWN)], s.at)[0]
        if old_ready and s.uploading and s.signature.size < len(big):
            old_half.append(s)
        if new.decide([Listed(path, s.signature, s.close)], s.at)[0]:
            (new_half if s.signature.size < len(big) else new_whole).append(s)
    assert old_half, "the quiet period alone should have taken the file half written"
    assert any(incomplete_reason(big[: s.signature.size]) is None for s in old_half)
    assert not new_half
    assert new_whole and all(not s.uploading for s in new_whole)
