"""Close-of-writer events from the real inotify of this machine (ingest/inotify.CloseWatch): a
file held open while written, closed, renamed, moved in and out, touched, written again; a
watcher whose folder does not exist yet polls it, then watches it once it is there; a folder
given as a symlink; links and a truncate, which no close follows; a folder reader that dies."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path

from pamfr.ingest.closes import Close, signature_of
from pamfr.ingest.inotify import CloseWatch
from tests.integration.test_filedrop import a28, originals, running_watcher, wait_for


def test_what_inotify_says_of_a_file_and_its_writer(tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    closes = CloseWatch()
    try:
        events = closes.watch(inbox)

        def close_of(name: str) -> Close:
            try:
                return events.close_of(name, signature_of(inbox / name))
            except FileNotFoundError:
                return Close.NO_EVENT

        def becomes(name: str, close: Close) -> None:
            wait_for(lambda: close_of(name) is close, 5, f"{name}: {close.name}")

        with open(inbox / "a.hl7", "wb") as f:
            f.write(b"MSH|^~\\&|GAM\r")
            f.flush()
            becomes("a.hl7", Close.OPEN)
            time.sleep(0.3)
            assert close_of("a.hl7") is Close.OPEN  # unchanged, still held: still open
        becomes("a.hl7", Close.CLOSED)
        os.utime(inbox / "a.hl7", ns=(10**18, 10**18))  # a new mtime, as MFMT sets it
        becomes("a.hl7", Close.CLOSED)
        with open(inbox / "a.hl7", "ab") as f:  # APPE
            f.write(b"PID|1\r")
            f.flush()
            becomes("a.hl7", Close.OPEN)
        becomes("a.hl7", Close.CLOSED)

        (inbox / "b.hl7.part").write_bytes(b"MSH|^~\\&|GAM\r")
        (inbox / "b.hl7.part").rename(inbox / "b.hl7")  # RNFR/RNTO
        becomes("b.hl7", Close.CLOSED)
        (tmp_path / "c.hl7").write_bytes(b"MSH|^~\\&|GAM\r")
        (tmp_path / "c.hl7").rename(inbox / "c.hl7")  # moved in whole: no write seen here
        becomes("c.hl7", Close.CLOSED)
        (inbox / "done").mkdir()
        sig = signature_of(inbox / "c.hl7")
        (inbox / "c.hl7").rename(inbox / "done" / "c.hl7")  # moved out: forgotten
        wait_for(lambda: events.close_of("c.hl7", sig) is Close.NO_EVENT, 5, "c.hl7 forgotten")
        with open(inbox / "c.hl7", "wb") as f:  # a new file of the same name, held open
            becomes("c.hl7", Close.OPEN)
            f.write(b"MSH|^~\\&|GAM\r")
            f.flush()
            time.sleep(0.3)
            assert close_of("c.hl7") is Close.OPEN
        becomes("c.hl7", Close.CLOSED)
        assert closes.alive
    finally:
        closes.stop()


def test_a_folder_that_appears_later_is_polled_then_watched(sqlite_url, tmp_path, caplog):
    inbox = tmp_path / "in"
    caplog.set_level(logging.INFO, logger="pamfr.ingest.filedrop")
    with running_watcher(sqlite_url, inbox, quiet_period=0.2, poll_interval=0.05) as watcher:
        wait_for(lambda: "polling every 0.05 s (inotify cannot watch" in caplog.text, 10, "polling")
        assert watcher.inboxes[0].mode == "polling"
        inbox.mkdir()
        wait_for(lambda: watcher.inboxes[0].mode == "inotify", 10, "the watch")
        (inbox / "a.hl7").write_text(a28("LATER", "LATER-1"), newline="")
        wait_for(lambda: (inbox / "done" / "a.hl7.ack").exists(), 10, "a.hl7 to be taken")
    said = [r for r in caplog.records if r.getMessage().startswith(f"file drop {inbox}: ")]
    assert [r.levelname for r in said] == ["WARNING", "INFO"]
    assert said[1].getMessage() == (
        f"file drop {inbox}: close-of-writer events (inotify IN_CLOSE_WRITE), "
        "and a listing every 0.05 s"
    )


def test_a_folder_given_as_a_symlink_is_watched_where_it_leads(sqlite_url, tmp_path, caplog):
    real = tmp_path / "real-in"
    real.mkdir()
    inbox = tmp_path / "in"
    inbox.symlink_to(real)
    closes = CloseWatch()
    try:
        events = closes.watch(inbox)
        with open(inbox / "a.hl7", "wb") as f:
            f.write(b"MSH|^~\\&|GAM\r")
            f.flush()
            wait_for(
                lambda: events.close_of("a.hl7", signature_of(inbox / "a.hl7")) is Close.OPEN,
                5,
                "the write to be seen",
            )
        wait_for(
            lambda: events.close_of("a.hl7", signature_of(inbox / "a.hl7")) is Close.CLOSED,
            5,
            "the close to be seen",
        )
    finally:
        closes.stop()
    (inbox / "a.hl7").unlink()
    # The watcher takes a new file there by its close, without falling back to polling.
    caplog.set_level(logging.INFO, logger="pamfr.ingest.filedrop")
    with running_watcher(sqlite_url, inbox, quiet_period=0.2, poll_interval=0.05) as watcher:
        wait_for(lambda: watcher.inboxes[0].mode == "inotify", 10, "the watch")
        (inbox / "b.hl7").write_text(a28("LINKED", "LINKED-1"), newline="")
        wait_for(lambda: (real / "done" / "b.hl7.ack").exists(), 5, "b.hl7 to be taken")
        assert watcher.inboxes[0].mode == "inotify"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_links_and_a_truncate_by_path_never_hold_the_folder(sqlite_url, tmp_path, caplog):
    """A symlink or a hard link made in the folder, and a truncate(2) by path, get no
    IN_CLOSE_WRITE: links keep the polling rules, a file written and never closed does once
    unchanged for [filedrop] incomplete_timeout, and the files after them are taken too.
    (The symlinks lead inside the inbox: one leading outside is refused, test_filedrop.)"""
    inbox, outside = tmp_path / "in", tmp_path / "outside"
    kept = inbox / "kept"  # a sub-folder of the inbox: inside it
    kept.mkdir(parents=True)
    outside.mkdir()
    (kept / "a.hl7").write_text(a28("SYM", "SYM-1"), newline="")
    (kept / "a2.hl7").write_text(a28("SYM2", "SYM-2"), newline="")
    (outside / "b.hl7").write_text(a28("HARD", "HARD-1"), newline="")
    cut = a28("CUT", "CUT-1").encode()
    done = inbox / "done"
    limit = 1.5
    caplog.set_level(logging.INFO, logger="pamfr.ingest.filedrop")
    settings = dict(quiet_period=0.2, poll_interval=0.05, incomplete_timeout=limit)
    with running_watcher(sqlite_url, inbox, **settings) as watcher:
        wait_for(lambda: watcher.inboxes[0].mode == "inotify", 10, "the watch")
        (inbox / "a-sym.hl7").symlink_to(kept / "a.hl7")
        (inbox / "a-sym-relative.hl7").symlink_to(Path("kept", "a2.hl7"))
        os.link(outside / "b.hl7", inbox / "b-hard.hl7")
        wait_for(lambda: (done / "b-hard.hl7.ack").exists(), 5, "the links to be taken")
        (inbox / "c-cut.hl7").write_bytes(cut + b"PID|1||half")
        os.truncate(inbox / "c-cut.hl7", len(cut))  # IN_MODIFY, no close
        cut_at = time.monotonic()
        (inbox / "d-after.hl7").write_text(a28("AFTER", "AFTER-1"), newline="")
        wait_for(lambda: (done / "d-after.hl7.ack").exists(), 10, "the files after it")
        assert time.monotonic() - cut_at >= limit
        assert watcher.inboxes[0].mode == "inotify"
    assert (done / "a-sym.hl7").is_symlink()
    assert (done / "a-sym-relative.hl7").is_symlink()  # leads nowhere from there: left alone
    assert (done / "c-cut.hl7").read_bytes() == cut
    assert originals(sqlite_url) == Counter(
        {"SYM-1": 1, "SYM-2": 1, "HARD-1": 1, "CUT-1": 1, "AFTER-1": 1}
    )
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 2
    assert warned[0].startswith("file 'c-cut.hl7' holds its folder back: its writer has not ")
    assert "then the polling rules decide; 1 file(s) wait behind it" in warned[0]
    assert warned[1].startswith("file 'c-cut.hl7': ") and "incomplete_timeout" in warned[1]


def test_a_dead_folder_reader_is_seen_and_the_watch_started_anew(sqlite_url, tmp_path, caplog):
    """The observer thread alive is not enough: the emitter thread that reads a folder's
    events may be gone. The watcher then stops the whole watch (no thread left behind) and
    starts one anew, and a writer's close is awaited again."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    closes = CloseWatch()
    try:
        closes.watch(inbox)
        assert closes.alive
        (emitter,) = closes._observer.emitters
        emitter.stop()
        emitter.join(5)
        assert not closes.alive
    finally:
        closes.stop()

    caplog.set_level(logging.INFO, logger="pamfr.ingest.filedrop")
    done = inbox / "done"
    settings = dict(quiet_period=0.2, poll_interval=0.05)
    with running_watcher(sqlite_url, inbox, writer_open=lambda path: False, **settings) as watcher:
        wait_for(lambda: watcher.inboxes[0].mode == "inotify", 10, "the watch")
        old = watcher.close_events.close_watch
        (emitter,) = old._observer.emitters
        emitter.stop()
        wait_for(
            lambda: (
                watcher.close_events.close_watch not in (old, None)
                and watcher.inboxes[0].mode == "inotify"
            ),
            5,
            "the watch to be started anew",
        )
        assert not old._observer.is_alive()
        assert not any(e.is_alive() for e in old._observer.emitters)
        time.sleep(0.3)  # a pass or more: the files there from now on are new
        with open(inbox / "a.hl7", "w", newline="") as f:  # its writer hidden from /proc
            f.write(a28("AGAIN", "AGAIN-1"))
            f.flush()
            time.sleep(1.0)
            assert not done.exists(), "taken while its writer still had it open"
        wait_for(lambda: (done / "a.hl7.ack").exists(), 5, "a.hl7 to be taken")
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 2 and "started anew" in warned[0]
    assert warned[1].startswith(
        "file 'a.hl7' holds its folder back: its writer has not closed it since it last wrote; "
        "held until "
    )
