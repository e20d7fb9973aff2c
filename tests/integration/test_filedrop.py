"""The file-drop door, with real folders: settling, file formats, order, done/error
and .ack files, unreadable files, a SIGKILL mid-file and a restart, `serve` with a watcher."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pamfr.hl7.frame import Inbound, Outcome
from pamfr.hl7.samples import Person, generate_mix, message
from pamfr.ingest.closes import Signature, signature_of
from pamfr.ingest.expected import compare_state, store_state
from pamfr.ingest.filedrop import FileDropWatcher, FileResult, MessageHandler
from pamfr.ingest.filing import (
    ChangedSinceSeen,
    file_away,
    open_for_writing,
    put_back,
    read_settled,
    written_since_filed,
)
from pamfr.ingest.replay import replay_local
from pamfr.path.pipeline import AsyncReceiver
from pamfr.path.receiver import Receiver
from pamfr.settings.config import FiledropSettings
from pamfr.store.db import make_engine, upgrade
from pamfr.store.readside import Selector, patient_view, select_patient_ids
from pamfr.store.schema import history
from pamfr.store.schema import message as message_table
from tests.helpers import parse_ack, run_cli, send


def a28(ipp: str, control_id: str, sep: str = "\r", **kw) -> str:
    return message("A28", Person(ipp=ipp, **kw), control_id, sep=sep)


def acks_of(path: Path) -> list:
    """The ACKs of an .ack file: one per line, CR-separated segments."""
    return [parse_ack(chunk, "latin-1") for chunk in path.read_bytes().split(b"\n") if chunk]


def log_rows(engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(message_table).order_by(message_table.c.id)).mappings()
        return [dict(r) for r in rows]


def view_by_ipp(engine, ipp: str) -> dict:
    with engine.connect() as conn:
        (pid,) = select_patient_ids(conn, Selector(ipp=ipp))
        return patient_view(conn, pid)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def drop_once(db_url: str, inbox: Path, **settings) -> list[FileResult]:
    """One --once pass of the watcher, in this process."""
    engine = make_engine(db_url)
    handler = AsyncReceiver(Receiver(engine), door="file")
    watcher = FileDropWatcher(
        handler, FiledropSettings(dirs=[str(inbox)], **{"quiet_period": 0, **settings})
    )
    try:
        return asyncio.run(asyncio.wait_for(watcher.run_once(), 60))
    finally:
        handler.close()
        engine.dispose()


@contextmanager
def running_watcher(
    db_url: str,
    inbox: Path,
    *,
    writer_open: Callable[[Path], bool] | None = None,
    wrap: Callable[[AsyncReceiver], MessageHandler] | None = None,
    max_message_size: int | None = None,
    **settings,
) -> Iterator[FileDropWatcher]:
    """The watcher of `inbox` on a loop in a background thread; `writer_open` replaces its
    /proc look for a process writing a file, `wrap` wraps the receiver it gives messages to."""
    engine = make_engine(db_url)
    handler = AsyncReceiver(Receiver(engine), door="file")
    extra: dict = {} if writer_open is None else {"writer_open": writer_open}
    if max_message_size is not None:
        extra["max_message_size"] = max_message_size
    settings = FiledropSettings(dirs=[str(inbox)], **settings)
    watcher = FileDropWatcher(wrap(handler) if wrap else handler, settings, **extra)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(watcher.run(),), daemon=True)
    thread.start()
    try:
        yield watcher
    finally:
        loop.call_soon_threadsafe(watcher.stop)
        thread.join(30)
        assert not thread.is_alive()
        loop.close()
        handler.close()
        engine.dispose()


# -- the basic flow, on both databases, through the CLI ------------------------------------


def test_watch_once_cli_basic_flow(db_url, engine, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.hl7").write_text(a28("IPP-A", "A-1") + a28("IPP-B", "A-2"), newline="")
    (inbox / "b.hl7").write_text(
        message("A31", Person(ipp="IPP-A", used_name="Lefèvre"), "B-1"), newline=""
    )
    result = run_cli("watch", str(inbox), "--db", db_url, "--quiet-period", "0", "--once")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in inbox.iterdir()) == ["done"]
    assert sorted(p.name for p in (inbox / "done").iterdir()) == [
        "a.hl7",
        "a.hl7.ack",
        "b.hl7",
        "b.hl7.ack",
    ]
    assert [(a.code, a.control_id) for a in acks_of(inbox / "done" / "a.hl7.ack")] == [
        ("AA", "A-1"),
        ("AA", "A-2"),
    ]
    # The mode of the folder, then one INFO line per file, without patient data.
    file_lines = [line for line in result.stderr.splitlines() if "pamfr.ingest.filedrop" in line]
    assert len(file_lines) == 3
    assert f"file drop {inbox}: close-of-writer events (inotify IN_CLOSE_WRITE)" in file_lines[0]
    file_lines = file_lines[1:]
    assert "file 'a.hl7': 2 message(s), AA=2 -> 'done/a.hl7'" in file_lines[0]
    assert not any("Lefèvre" in line or "IPP-A" in line for line in file_lines)
    assert view_by_ipp(engine, "IPP-A")["used_name"] == "Lefèvre"
    rows = log_rows(engine)
    assert [(r["door"], r["control_id"]) for r in rows] == [
        ("file", "A-1"),
        ("file", "A-2"),
        ("file", "B-1"),
    ]
    assert rows[0]["peer"] == str(inbox / "a.hl7")


# -- settling ------------------------------------------------------------------------------


def test_partial_files_are_ignored_until_quiet(sqlite_url, engine, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    done = inbox / "done"
    content = "".join(a28(f"P{n}", f"G-{n}") for n in range(6)).encode()
    (inbox / "a.hl7.part").write_bytes(a28("PART", "PART-1").encode())
    (inbox / "upload.TMP").write_bytes(a28("TMP", "TMP-1").encode())
    (inbox / ".a.hl7.x7Yz").write_bytes(a28("HIDDEN", "HIDDEN-1").encode())  # rsync style
    quiet = 1.0  # ten times the pause between two writes: room for a loaded machine
    with running_watcher(sqlite_url, inbox, quiet_period=quiet, poll_interval=0.05):
        # An FTP upload writing in place: the file keeps growing for about a second.
        with open(inbox / "b.hl7", "wb") as f:
            step = len(content) // 8
            for i in range(0, len(content), step):
                f.write(content[i : i + step])
                f.flush()
                last_write = time.monotonic()
                time.sleep(0.1)
                assert not done.exists(), "a file still being written was taken"
        wait_for(lambda: (done / "b.hl7.ack").exists(), 10, "b.hl7 to be processed")
        assert time.monotonic() - last_write >= quiet
        acks = acks_of(done / "b.hl7.ack")
        assert [a.control_id for a in acks] == [f"G-{n}" for n in range(6)]
        assert {a.code for a in acks} == {"AA"}
        time.sleep(1.5 * quiet)
        assert (inbox / "a.hl7.part").exists()
        assert (inbox / "upload.TMP").exists()
        assert (inbox / ".a.hl7.x7Yz").exists()
        # The upload completes: renamed to its final name, it is taken.
        (inbox / "a.hl7.part").rename(inbox / "a.hl7")
        wait_for(lambda: (done / "a.hl7.ack").exists(), 10, "a.hl7 to be processed")
    assert [r["control_id"] for r in log_rows(engine)] == [
        *(f"G-{n}" for n in range(6)),
        "PART-1",
    ]


# -- formats -------------------------------------------------------------------------------


def test_each_file_format(sqlite_url, engine, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    batch = (
        "FHS|^~\\&|GAM|CHU-X|||20240306111154\r"
        "BHS|^~\\&|GAM|CHU-X|||20240306111154\r"
        + a28("BATCH-1", "BATCH-1")
        + a28("BATCH-2", "BATCH-2")
        + "BTS|2\rFTS|1\r"
    )
    mllp = b"".join(b"\x0b" + a28(f"MLLP-{n}", f"MLLP-{n}").encode() + b"\x1c\r" for n in (1, 2))
    utf8 = message("A28", Person(ipp="CS-1", used_name="Hélène"), "CS-1").encode("utf-8")
    latin1 = message("A28", Person(ipp="CS-2", used_name="Noël"), "CS-2", charset="8859/1").encode(
        "latin-1"
    )
    files = {
        "1-single.hl7": a28("SINGLE", "SINGLE").encode(),
        "2-several-cr.hl7": (a28("CR-1", "CR-1") + a28("CR-2", "CR-2")).encode(),
        "3-several-lf.hl7": (a28("LF-1", "LF-1", "\n") + a28("LF-2", "LF-2", "\n")).encode(),
        "4-several-crlf.hl7": (
            a28("CRLF-1", "CRLF-1", "\r\n") + a28("CRLF-2", "CRLF-2", "\r\n")
        ).encode(),
        "5-batch.hl7": batch.encode(),
        "6-mllp.hl7": mllp,
        "7-charsets.hl7": utf8 + latin1,
        "0-header-line.hl7": b"# export GAM 2024-03-06\r" + a28("HEAD-1", "HEAD-1").encode(),
    }
    for name, data in files.items():
        (inbox / name).write_bytes(data)
    results = drop_once(sqlite_url, inbox)
    assert [(r.source.name, r.messages, r.codes) for r in results] == [
        ("0-header-line.hl7", 1, {"AA": 1}),  # an export's header line before the MSH
        ("1-single.hl7", 1, {"AA": 1}),
        ("2-several-cr.hl7", 2, {"AA": 2}),
        ("3-several-lf.hl7", 2, {"AA": 2}),
        ("4-several-crlf.hl7", 2, {"AA": 2}),
        ("5-batch.hl7", 2, {"AA": 2}),
        ("6-mllp.hl7", 2, {"AA": 2}),
        ("7-charsets.hl7", 2, {"AA": 2}),
    ]
    done = inbox / "done"
    for name, data in files.items():
        assert (done / name).read_bytes() == data  # moved untouched
    assert [a.control_id for a in acks_of(done / "5-batch.hl7.ack")] == ["BATCH-1", "BATCH-2"]
    charset_acks = acks_of(done / "7-charsets.hl7.ack")
    assert [a.msh[17] for a in charset_acks] == ["UNICODE UTF-8", "8859/1"]
    assert view_by_ipp(engine, "CS-1")["used_name"] == "Hélène"
    assert view_by_ipp(engine, "CS-2")["used_name"] == "Noël"
    assert view_by_ipp(engine, "LF-2")["birth_name"] == "PAT-TEST"
    assert [r["charset"] for r in log_rows(engine)][-2:] == ["UNICODE UTF-8", "8859/1"]


# -- order ---------------------------------------------------------------------------------


def test_files_are_taken_in_name_order_or_mtime_order(sqlite_url, engine, tmp_path):
    by_name, by_mtime = tmp_path / "by_name", tmp_path / "by_mtime"
    by_name.mkdir()
    by_mtime.mkdir()
    for n, name in enumerate(["03.hl7", "01.hl7", "02.hl7"]):  # created in this order
        (by_name / name).write_text(a28(f"N{name}", f"N-{name}"), newline="")
        (by_mtime / name).write_text(a28(f"M{name}", f"M-{name}"), newline="")
        os.utime(by_mtime / name, ns=(0, 1_700_000_000_000_000_000 - n * 10**9))
    drop_once(sqlite_url, by_name)
    drop_once(sqlite_url, by_mtime, order="mtime")
    assert [r["control_id"] for r in log_rows(engine)] == [
        "N-01.hl7",
        "N-02.hl7",
        "N-03.hl7",
        # oldest mtime first: 02 (set 2 s back), 01, 03
        "M-02.hl7",
        "M-01.hl7",
        "M-03.hl7",
    ]


def test_messages_of_a_file_apply_in_order(sqlite_url, engine, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    person = Person(ipp="ORDER-1")
    steps = [message("A28", person, "O-1")]
    for n, used in enumerate(["Gérard", "Noël", "Benoît"], 2):
        person.used_name = used
        steps.append(message("A31", person, f"O-{n}"))
    (inbox / "f.hl7").write_text("".join(steps), newline="")
    drop_once(sqlite_url, inbox)
    assert view_by_ipp(engine, "ORDER-1")["used_name"] == "Benoît"


# -- done/, error/, .ack, collisions -------------------------------------------------------


def test_done_error_ack_files_and_name_collisions(sqlite_url, engine, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    good = a28("GOOD-1", "GOOD-1") + a28("GOOD-2", "GOOD-2")
    bad = (
        a28("BAD-1", "BAD-1")
        + a28("BAD-2", "BAD-2", ins="123456789012345")  # wrong INS key: AE 102
        + a28("BAD-3", "BAD-3").replace("ADT^A28^ADT_A05", "ADT^A99^ADT_A01")  # AR 201
    )
    (inbox / "good.hl7").write_text(good, newline="")
    (inbox / "bad.hl7").write_text(bad, newline="")
    drop_once(sqlite_url, inbox)
    done, error = inbox / "done", inbox / "error"
    assert sorted(p.name for p in done.iterdir()) == ["good.hl7", "good.hl7.ack"]
    assert sorted(p.name for p in error.iterdir()) == ["bad.hl7", "bad.hl7.ack"]
    bad_acks = acks_of(error / "bad.hl7.ack")
    assert [(a.code, a.control_id, a.err_codes) for a in bad_acks] == [
        ("AA", "BAD-1", []),
        ("AE", "BAD-2", ["102"]),
        ("AR", "BAD-3", ["201"]),
    ]
    ack_bytes = (error / "bad.hl7.ack").read_bytes()
    assert ack_bytes.count(b"\n") == 3 and ack_bytes.endswith(b"\r\n")

    # The same name again, new content: a suffix, nothing overwritten.
    second = a28("GOOD-3", "GOOD-3")
    (inbox / "good.hl7").write_text(second, newline="")
    drop_once(sqlite_url, inbox)
    # And the first content once more: its messages are duplicates, answered AA again.
    (inbox / "good.hl7").write_text(good, newline="")
    drop_once(sqlite_url, inbox)
    assert sorted(p.name for p in done.iterdir()) == [
        "good.1.hl7",
        "good.1.hl7.ack",
        "good.2.hl7",
        "good.2.hl7.ack",
        "good.hl7",
        "good.hl7.ack",
    ]
    assert (done / "good.hl7").read_bytes() == good.encode()
    assert (done / "good.1.hl7").read_bytes() == second.encode()
    assert [(a.code, a.control_id) for a in acks_of(done / "good.2.hl7.ack")] == [
        ("AA", "GOOD-1"),
        ("AA", "GOOD-2"),
    ]
    rows = log_rows(engine)
    assert [r["duplicate_of"] is not None for r in rows if r["control_id"] == "GOOD-1"] == [
        False,
        True,
    ]


# -- unreadable ----------------------------------------------------------------------------


def test_unreadable_files_go_to_error_with_the_reason(sqlite_url, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    garbage = b"\x1f\x8b\x08" + random.Random(7).randbytes(4096)  # a gzip file, say
    assert b"\x0b" in garbage and b"\x1c" in garbage  # looks like MLLP framing, too
    (inbox / "a-garbage.bin").write_bytes(garbage)
    (inbox / "b-lost.hl7").symlink_to(inbox / "nowhere.hl7")  # inside, cannot be opened
    (inbox / "c-folder.hl7").mkdir()  # a folder is not a file: left alone
    (inbox / "d-good.hl7").write_text(a28("AFTER", "AFTER-1"), newline="")
    result = run_cli("watch", str(inbox), "--db", sqlite_url, "--quiet-period", "0", "--once")
    assert result.returncode == 1, result.stderr  # some file went to error/
    error = inbox / "error"
    assert sorted(p.name for p in error.iterdir()) == [
        "a-garbage.bin",
        "a-garbage.bin.error",
        "b-lost.hl7",
        "b-lost.hl7.error",
    ]
    assert (error / "a-garbage.bin").read_bytes() == garbage
    assert "not an HL7 v2 file: it begins with" in (error / "a-garbage.bin.error").read_text()
    assert "No such file or directory" in (error / "b-lost.hl7.error").read_text()
    assert (error / "b-lost.hl7").is_symlink()
    assert (inbox / "c-folder.hl7").is_dir()
    # The watcher carried on with the next file.
    assert [a.code for a in acks_of(inbox / "done" / "d-good.hl7.ack")] == ["AA"]
    assert "unreadable" in result.stderr


def test_empty_and_msh_less_files_wait_for_the_limit_binary_files_go_at_once(sqlite_url, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    done, error = inbox / "done", inbox / "error"
    limit = 2.0
    settings = dict(quiet_period=0.1, poll_interval=0.05, incomplete_timeout=limit)
    with running_watcher(sqlite_url, inbox, **settings):
        dropped = time.monotonic()
        # An upload paused after an export's header line, then finished before the limit.
        (inbox / "0-header.hl7").write_bytes(b"# export GAM\r")
        (inbox / "a-junk.hl7").write_bytes(b"PK\x03\x04 a zip, not HL7")
        (inbox / "b-empty.hl7").write_bytes(b"")
        (inbox / "c-ms.hl7").write_bytes(b"MS")
        (inbox / "d-text.hl7").write_bytes(b"# export GAM\r")  # text, no MSH ever came
        time.sleep(0.5)
        with open(inbox / "0-header.hl7", "ab") as f:
            f.write(a28("HEADER", "HEADER-1").encode())
        # The .ack is written just before the move: wait for both.
        header = done / "0-header.hl7"
        wait_for(lambda: header.exists() and (done / "0-header.hl7.ack").exists(), 10, "0-header")
        assert not (error / "0-header.hl7").exists(), "taken while its upload was paused"
        assert header.read_bytes().startswith(b"# export GAM\rMSH|")
        wait_for(lambda: (error / "a-junk.hl7.error").exists(), 10, "a-junk.hl7")
        assert time.monotonic() - dropped < limit
        assert not (error / "b-empty.hl7").exists()
        wait_for(lambda: (error / "d-text.hl7.error").exists(), 10, "the limit")
        assert time.monotonic() - dropped >= limit
    assert (error / "a-junk.hl7.error").read_text() == (
        "a-junk.hl7: not an HL7 v2 file: it begins with b'PK\\x03', "
        "binary content (control byte 0x03 in its first line)\n"
    )
    for name, why in [
        ("b-empty.hl7", "the file is empty (0 bytes)"),
        ("c-ms.hl7", "no MSH segment"),
        ("d-text.hl7", "no MSH segment"),
    ]:
        said = (error / f"{name}.error").read_text()
        assert said.startswith(f"{name}: incomplete, unchanged for ") and said.endswith(
            f" s: {why}\n"
        )
    assert (error / "c-ms.hl7").read_bytes() == b"MS"
    assert [a.control_id for a in acks_of(done / "0-header.hl7.ack")] == ["HEADER-1"]


class Appender:
    """Another process holding a file open for appending, as an FTP server does (pamfr's own
    handles never count as a writer: the writer must be another process)."""

    _CODE = (
        "import sys\n"
        "with open(sys.argv[1], 'ab') as f:\n"
        "    print('open', flush=True)\n"
        "    for line in sys.stdin.buffer:\n"
        "        f.write(bytes.fromhex(line.decode())); f.flush(); print('written', flush=True)\n"
    )

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self._CODE, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout.readline() == b"open\n"

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data.hex().encode() + b"\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == b"written\n"

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0


def file_away_seeing_writers(path: Path, folder: Path, side: str, read: Signature):
    return file_away(path, folder, side, b"why\n", read, writer_open=open_for_writing)


def test_a_file_that_changed_or_is_open_for_writing_is_not_moved(tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    path = inbox / "a.hl7"
    path.write_bytes(b"XYZ")
    read = signature_of(path)
    with Appender(path) as appe:  # written again between the read and the move, held open
        appe.write(b" more")
        for folder, side in [(inbox / "error", ".error"), (inbox / "done", ".ack")]:
            assert file_away_seeing_writers(path, folder, side, read) is None
            assert list(folder.iterdir()) == []  # the .ack/.error written first is taken back
        # Unchanged since read, but a process holds it open for writing: not moved either.
        assert file_away_seeing_writers(path, inbox / "error", ".error", signature_of(path)) is None
    assert path.read_bytes() == b"XYZ more"
    filed = file_away_seeing_writers(path, inbox / "error", ".error", signature_of(path))
    assert filed.target == inbox / "error" / "a.hl7" and filed.target.read_bytes() == b"XYZ more"
    assert not filed.written_while_moved


def test_a_write_that_lands_during_the_move_is_seen_and_the_file_put_back(tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    done = inbox / "done"
    path = inbox / "a.hl7"
    path.write_bytes(b"MSH|1\r")

    def appends_as_it_is_looked_at(looked_at: Path) -> bool:
        with open(looked_at, "ab") as f:  # lands after the last look, before the rename
            f.write(b"MSH|2\r")
        return False  # its writer is hidden from /proc

    filed = file_away(
        path, done, ".ack", b"x\n", signature_of(path), writer_open=appends_as_it_is_looked_at
    )
    assert filed.written_while_moved and filed.target == done / "a.hl7"
    assert put_back(filed)
    assert path.read_bytes() == b"MSH|1\rMSH|2\r" and list(done.iterdir()) == []

    filed = file_away_seeing_writers(path, done, ".ack", signature_of(path))
    assert not written_since_filed(filed)
    with open(filed.target, "ab") as f:
        f.write(b"MSH|3\r")
    assert written_since_filed(filed)
    path.write_bytes(b"MSH|new\r")  # a new file took its name in the inbox
    assert not put_back(filed)
    assert sorted(p.name for p in done.iterdir()) == ["a.hl7", "a.hl7.ack"]
    assert path.read_bytes() == b"MSH|new\r"


def test_a_same_size_rewrite_or_a_rename_over_with_the_old_mtime_is_not_moved(tmp_path):
    """Size and mtime are not enough: an FTP client can rewrite a file with the same size,
    or rename another over it, then set the old mtime back (MFMT); the inode and the ctime
    (which no one sets by hand) tell."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    path = inbox / "a.hl7"
    path.write_bytes(b"MSH|one\r")
    read = signature_of(path)
    time.sleep(0.05)  # past the tick of the kernel's file-time clock
    with open(path, "r+b") as f:  # rewritten in place, same size
        f.write(b"MSH|two\r")
    os.utime(path, ns=(read.mtime_ns, read.mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (read.size, read.mtime_ns)
    with pytest.raises(ChangedSinceSeen):
        read_settled(path, read)
    assert file_away_seeing_writers(path, inbox / "done", ".ack", read) is None

    read = signature_of(path)
    other = inbox / "a.hl7.part"
    other.write_bytes(b"MSH|333\r")
    os.utime(other, ns=(read.mtime_ns, read.mtime_ns))
    other.rename(path)  # renamed over it, same size, same mtime
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (read.size, read.mtime_ns)
    with pytest.raises(ChangedSinceSeen):
        read_settled(path, read)
    assert file_away_seeing_writers(path, inbox / "done", ".ack", read) is None
    assert not (inbox / "done" / "a.hl7").exists()

    # What pamfr itself does between the read and the move (the read, the .ack beside the
    # target) leaves the file as it was seen: it moves.
    read = signature_of(path)
    assert read_settled(path, read) == b"MSH|333\r"
    filed = file_away_seeing_writers(path, inbox / "done", ".ack", read)
    assert filed.target == inbox / "done" / "a.hl7" and filed.target.read_bytes() == b"MSH|333\r"


def originals(db_url: str) -> Counter:
    """How many times each control id was applied (logged as an original, not a duplicate)."""
    engine = make_engine(db_url)
    try:
        return Counter(r["control_id"] for r in log_rows(engine) if r["duplicate_of"] is None)
    finally:
        engine.dispose()


class OpensItOnceApplied:
    """An uploader that opens the file for appending (FTP APPE) as pamfr commits its last
    message, just before pamfr would move it: a process /proc shows."""

    def __init__(self, handler: AsyncReceiver, last_control_id: str) -> None:
        self.handler, self.last = handler, last_control_id
        self.opened: dict[str, Appender] = {}

    async def receive(self, inbound: Inbound) -> Outcome:
        outcome = await self.handler.receive(inbound)
        if f"|{self.last}|".encode() in inbound.raw and not self.opened:
            self.opened["file"] = Appender(Path(inbound.peer)).__enter__()
        return outcome


def test_a_file_a_writer_opened_just_before_its_move_stays_until_written(sqlite_url, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    done = inbox / "done"
    first, second = a28("APPE-1", "APPE-1").encode(), a28("APPE-2", "APPE-2").encode()
    appender: list[OpensItOnceApplied] = []

    def wrap(handler: AsyncReceiver) -> OpensItOnceApplied:
        appender.append(OpensItOnceApplied(handler, "APPE-1"))
        return appender[0]

    settings = dict(quiet_period=0.2, poll_interval=0.05)
    with running_watcher(sqlite_url, inbox, wrap=wrap, **settings):
        (inbox / "a.hl7").write_bytes(first)
        wait_for(lambda: appender[0].opened, 10, "APPE-1 to be applied")
        time.sleep(0.5)
        assert not done.joinpath("a.hl7").exists(), "moved while a writer had it open"
        with appender[0].opened["file"] as appe:
            appe.write(second)
        wait_for(lambda: originals(sqlite_url)["APPE-2"], 10, "APPE-2 to be applied")
        wait_for(lambda: (done / "a.hl7.ack").exists(), 10, "a.hl7 to be filed")
    assert (done / "a.hl7").read_bytes() == first + second
    assert [(a.code, a.control_id) for a in acks_of(done / "a.hl7.ack")] == [
        ("AA", "APPE-1"),  # answered from the log: applied once
        ("AA", "APPE-2"),
    ]
    assert originals(sqlite_url) == Counter({"APPE-1": 1, "APPE-2": 1})


def test_a_file_written_after_its_move_goes_back_to_be_taken_again(sqlite_url, tmp_path, caplog):
    """An FTP server running as another user (hidden from /proc) opened the file for APPE
    just before pamfr moved it, and writes after the move: the file, seen changed in done/,
    goes back to the inbox and its added message is applied; when a new file took its
    inbox name meanwhile it stays in done/, with an ERROR naming both."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    done = inbox / "done"
    first, second = a28("LATE-1", "LATE-1").encode(), a28("LATE-2", "LATE-2").encode()
    caplog.set_level(logging.INFO, logger="pamfr.ingest.filedrop")
    settings = dict(quiet_period=0.5, poll_interval=0.05)
    with running_watcher(sqlite_url, inbox, writer_open=lambda path: False, **settings):
        (inbox / "a.hl7").write_bytes(first)
        with open(inbox / "a.hl7", "ab") as appe:  # opened, nothing sent yet
            wait_for(lambda: (done / "a.hl7").exists(), 10, "a.hl7 to be moved")
            appe.write(second)
        wait_for(lambda: originals(sqlite_url)["LATE-2"], 10, "LATE-2 to be applied")
        wait_for(lambda: (done / "a.hl7.ack").exists(), 10, "a.hl7 to be filed again")

        (inbox / "b.hl7").write_bytes(a28("TAKEN-1", "TAKEN-1").encode())
        with open(inbox / "b.hl7", "ab") as appe:
            wait_for(lambda: (done / "b.hl7").exists(), 10, "b.hl7 to be moved")
            (inbox / "b.hl7").write_bytes(a28("NEW-1", "NEW-1").encode())  # its name again
            appe.write(a28("TAKEN-2", "TAKEN-2").encode())
        wait_for(lambda: originals(sqlite_url)["NEW-1"], 10, "the new b.hl7 to be applied")
    assert (done / "a.hl7").read_bytes() == first + second
    assert sorted(p.name for p in done.iterdir()) == [
        "a.hl7",
        "a.hl7.ack",
        "b.1.hl7",
        "b.1.hl7.ack",
        "b.hl7",
        "b.hl7.ack",
    ]
    assert [(a.code, a.control_id) for a in acks_of(done / "a.hl7.ack")] == [
        ("AA", "LATE-1"),
        ("AA", "LATE-2"),
    ]
    assert originals(sqlite_url) == Counter({"LATE-1": 1, "LATE-2": 1, "TAKEN-1": 1, "NEW-1": 1})
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert [level for level, _ in said] == ["WARNING", "ERROR"]
    assert said[0][1].startswith("file 'done/a.hl7': written after it was moved there")
    assert str(done / "b.hl7") in said[1][1] and str(inbox / "b.hl7") in said[1][1]


def test_store_unavailable_leaves_the_file_for_a_later_pass(tmp_path):
    url = f"sqlite:///{tmp_path / 'later.db'}"  # no schema yet: every commit fails
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.hl7").write_text(a28("LATER", "LATER-1"), newline="")
    engine = make_engine(url)
    handler = AsyncReceiver(Receiver(engine), door="file")
    watcher = FileDropWatcher(handler, FiledropSettings(dirs=[str(inbox)], quiet_period=0))
    try:
        assert asyncio.run(asyncio.wait_for(watcher.run_once(), 30)) == []
    finally:
        handler.close()
        engine.dispose()
    assert watcher.failures == 1
    assert sorted(p.name for p in inbox.iterdir()) == ["a.hl7"]  # not in error/: retried
    upgrade(url)
    assert [r.codes for r in drop_once(url, inbox)] == [{"AA": 1}]


# -- crash safety --------------------------------------------------------------------------


def _count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_sigkill_mid_file_then_restart_applies_everything_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    inbox = tmp_path / "in"
    inbox.mkdir()
    total = 200
    data = "".join(generate_mix(total, seed=44)).encode()
    (inbox / "big.hl7").write_bytes(data)
    engine = make_engine(url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pamfr", "watch", str(inbox), "--db", url]
        + ["--quiet-period", "0", "--poll-interval", "0.05", "--no-migrate"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: proc.poll() is not None or _count(engine, message_table) >= 15,
            60,
            "the first commits",
        )
        assert proc.poll() is None, "pamfr watch exited on its own"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    committed = _count(engine, message_table)
    assert 15 <= committed < total, "the kill did not land mid-file"
    assert (inbox / "big.hl7").exists() and not (inbox / "done").exists()

    result = run_cli("watch", str(inbox), "--db", url, "--quiet-period", "0", "--once")
    assert result.returncode == 0, result.stderr
    acks = acks_of(inbox / "done" / "big.hl7.ack")
    assert len(acks) == total and {a.code for a in acks} == {"AA"}

    rows = log_rows(engine)
    originals = [r for r in rows if r["duplicate_of"] is None]
    duplicates = [r for r in rows if r["duplicate_of"] is not None]
    assert len(originals) == total
    assert Counter(r["control_id"] for r in originals) == Counter(a.control_id for a in acks), (
        "each message once as an original"
    )
    assert len(duplicates) == committed
    assert {r["control_id"] for r in duplicates} == {r["control_id"] for r in rows[:committed]}
    with engine.connect() as conn:
        history_message_ids = {r[0] for r in conn.execute(select(history.c.message_id))}
    assert not history_message_ids & {r["id"] for r in duplicates}

    # The same file applied once, without any crash, gives the same store.
    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
    upgrade(reference_url)
    reference = make_engine(reference_url)
    try:
        (inbox / "again").mkdir()
        (inbox / "again" / "big.hl7").write_bytes(data)
        replay_local([inbox / "again" / "big.hl7"], Receiver(reference), workers=2)
        assert compare_state(store_state(reference), store_state(engine)) == []
        assert _count(reference, history) == _count(engine, history)
    finally:
        reference.dispose()
        engine.dispose()


# -- serve starts the watcher; SIGTERM finishes the message in hand -----------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_runs_the_file_door_and_stops_cleanly_mid_file(sqlite_url, engine, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    port = _free_port()
    config = tmp_path / "pamfr.toml"
    config.write_text(
        f'[filedrop]\ndirs = ["{inbox}"]\nquiet_period = 0\npoll_interval = 0.05\n'
        f"[server]\nport = {port}\nshutdown_grace = 5\n"
    )
    log_file = tmp_path / "serve.log"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pamfr", "--config", str(config), "serve", "--db", sqlite_url],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: _port_open(port), 30, "serve to listen")
        (inbox / "one.hl7").write_text(a28("FILE-1", "FILE-1"), newline="")
        (ack,) = send(port, [a28("MLLP-1", "MLLP-1")])
        assert ack.code == "AA"
        wait_for(lambda: (inbox / "done" / "one.hl7.ack").exists(), 20, "the dropped file")

        total = 80
        big = "".join(a28(f"BIG-{n}", f"BIG-{n}") for n in range(total))
        (inbox / "two.hl7").write_text(big, newline="")
        wait_for(lambda: _count(engine, message_table) >= 6, 20, "the big file to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log_file.read_text()
    assert "stopping after" in output, output
    assert (inbox / "two.hl7").exists(), "a file not finished stays in the inbox"
    applied = _count(engine, message_table)
    assert applied < 2 + total
    doors = Counter(r["door"] for r in log_rows(engine))
    assert doors["mllp"] == 1 and doors["file"] == applied - 1

    result = run_cli("watch", str(inbox), "--db", sqlite_url, "--quiet-period", "0", "--once")
    assert result.returncode == 0, result.stderr
    acks = acks_of(inbox / "done" / "two.hl7.ack")
    assert [a.control_id for a in acks] == [f"BIG-{n}" for n in range(total)]
    assert {a.code for a in acks} == {"AA"}
    assert _count(engine, message_table) == applied + total


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
