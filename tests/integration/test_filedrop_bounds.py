"""The file door's bounds, over real folders and a real store: a file over max_file_size and a
link leading outside the inbox go to error/ unread, a message over [server] max_frame_size
is answered as the MLLP door answers that frame, an unchanged incomplete file is read once,
pamfr's own handles never count as a writer, a name holding a newline stays one log line."""

from __future__ import annotations

import gzip
import logging
import os
from collections import Counter
from pathlib import Path

import pytest

from pamfr.ingest.closes import signature_of
from pamfr.ingest.filing import ChangedSinceSeen, open_for_writing, read_settled
from pamfr.settings.config import FiledropSettings
from pamfr.transport.server import ServerLimits
from tests.helpers import pamfr_server, send
from tests.integration.test_filedrop import (
    Appender,
    a28,
    acks_of,
    drop_once,
    originals,
    running_watcher,
    wait_for,
)

MiB = 1024 * 1024


def bytes_read() -> int:
    """Bytes this process has read through read(2) and the like, all threads (/proc)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def test_a_file_over_max_file_size_goes_to_error_unread_and_the_next_is_taken(db_url, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    big = inbox / "a-big.hl7"
    with open(big, "wb") as f:  # 1 GiB (sparse): a message, then zeros
        f.write(a28("BIG", "BIG-1").encode())
        f.truncate(1024 * MiB)
    (inbox / "b-good.hl7").write_text(a28("GOOD", "GOOD-1"), newline="")
    before = bytes_read()
    results = drop_once(db_url, inbox)  # the default [filedrop] max_file_size: 64 MiB
    assert bytes_read() - before < MiB  # the store's own reads, not the 1 GiB
    error = inbox / "error"
    assert sorted(p.name for p in error.iterdir()) == ["a-big.hl7", "a-big.hl7.error"]
    assert (error / "a-big.hl7.error").read_text() == (
        f"a-big.hl7: {1024 * MiB} bytes, over [filedrop] max_file_size ({64 * MiB} bytes): "
        "not read\n"
    )
    assert [r.source.name for r in results] == ["a-big.hl7", "b-good.hl7"]
    assert [a.code for a in acks_of(inbox / "done" / "b-good.hl7.ack")] == ["AA"]
    assert originals(db_url) == Counter({"GOOD-1": 1})  # nothing of the big file applied


def test_max_file_size_is_a_setting_with_a_floor():
    assert FiledropSettings().max_file_size == 64 * MiB
    assert FiledropSettings(max_file_size=4096).max_file_size == 4096
    with pytest.raises(ValueError, match="max_file_size"):
        FiledropSettings(max_file_size=10)


def oversized(ipp: str, control_id: str, size: int) -> str:
    """An A28 made longer than `size` by a Z segment."""
    return a28(ipp, control_id).rstrip("\r") + "\rZPF|" + "x" * size + "\r"


def test_a_message_over_max_frame_size_is_answered_as_the_mllp_door_answers_it(
    sqlite_url, tmp_path
):
    limit = 2048
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.hl7").write_text(
        a28("S1", "S-1") + oversized("LONG", "LONG-1", limit) + a28("S2", "S-2"), newline=""
    )
    with running_watcher(sqlite_url, inbox, max_message_size=limit, quiet_period=0.1) as w:
        wait_for(lambda: (inbox / "error" / "a.hl7.ack").exists(), 30, "a.hl7 to be filed")
        assert w.failures == 0
    by_file = acks_of(inbox / "error" / "a.hl7.ack")
    assert [(a.code, a.control_id) for a in by_file] == [
        ("AA", "S-1"),
        ("AR", "LONG-1"),
        ("AA", "S-2"),
    ]
    assert originals(sqlite_url) == Counter({"S-1": 1, "LONG-1": 1, "S-2": 1})  # logged

    mllp_url = f"sqlite:///{tmp_path / 'mllp.db'}"
    from pamfr.store.db import upgrade

    upgrade(mllp_url)
    with pamfr_server(mllp_url, limits=ServerLimits(max_frame_size=limit)) as server:
        (by_mllp,) = send(server.port, [oversized("LONG", "LONG-1", limit)])
    assert by_mllp.code == "AR"
    # The same answer: the same ERR, but for the size, which counts the frame's own bytes.
    (file_err,) = by_file[1].errs
    (mllp_err,) = by_mllp.errs
    assert file_err[3] == mllp_err[3] and file_err[3].startswith("100")
    assert "over the size limit" in file_err[-1] and "over the size limit" in mllp_err[-1]


def test_a_link_leading_outside_the_inbox_goes_to_error_unread(sqlite_url, tmp_path):
    """A link to a real message outside the inbox, and one to pamfr's own store (which it
    holds open for writing): both refused, nothing read through them, the next file taken."""
    inbox, outside = tmp_path / "in", tmp_path / "outside"
    inbox.mkdir()
    outside.mkdir()
    (outside / "patient.hl7").write_text(a28("OUTSIDE", "OUT-1"), newline="")
    (inbox / "a-out.hl7").symlink_to(outside / "patient.hl7")
    (inbox / "b-store.hl7").symlink_to(tmp_path / "pamfr.db")  # the store of sqlite_url
    (inbox / "c-good.hl7").write_text(a28("GOOD", "GOOD-1"), newline="")
    with running_watcher(sqlite_url, inbox, quiet_period=0.1, poll_interval=0.05):
        wait_for(lambda: (inbox / "done" / "c-good.hl7.ack").exists(), 30, "c-good.hl7")
    error = inbox / "error"
    assert sorted(p.name for p in error.iterdir()) == [
        "a-out.hl7",
        "a-out.hl7.error",
        "b-store.hl7",
        "b-store.hl7.error",
    ]
    for name in ("a-out.hl7", "b-store.hl7"):
        assert (error / name).is_symlink()  # the link moved, not what it leads to
        assert (error / f"{name}.error").read_text() == (
            f"{name}: a symbolic link leading outside the inbound folder: not followed, "
            "nothing read\n"
        )
    assert (outside / "patient.hl7").read_bytes() == a28("OUTSIDE", "OUT-1").encode()
    assert (tmp_path / "pamfr.db").is_file()
    assert originals(sqlite_url) == Counter({"GOOD-1": 1})


def test_a_symlink_is_never_followed_when_a_file_is_read(tmp_path):
    """A link put where a file was listed (after the listing) is not read through."""
    target = tmp_path / "secret.hl7"
    target.write_bytes(b"MSH|secret\r")
    path = tmp_path / "a.hl7"
    path.symlink_to(target)
    with pytest.raises(ChangedSinceSeen):
        read_settled(path, signature_of(path))
    assert read_settled(path, signature_of(path), through=target) == b"MSH|secret\r"


def test_only_another_process_holding_a_file_counts_as_its_writer(tmp_path):
    path = tmp_path / "a.hl7"
    path.write_bytes(b"MSH|")
    with open(path, "ab"):  # pamfr's own handle
        assert not open_for_writing(path)
    with Appender(path) as appe:  # another process's
        assert open_for_writing(path)
        appe.write(b"x")
    assert not open_for_writing(path)


def test_an_unchanged_incomplete_file_is_read_once_and_its_hold_told_once(
    sqlite_url, tmp_path, caplog
):
    """An incomplete 8 MiB file holds the folder: it is read once, not at every pass; one
    WARNING names it, why and until when, and how many files wait; a binary file behind it
    goes to error/ at once, the HL7 file behind it waits its turn."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    cut = b"MSH|^~\\&|GAM|HOP|PAMFR|HOP|20250101||ADT^A28|CUT-1|P|2.5\rPID|1||" + b"9" * 8 * MiB
    (inbox / "a-cut.hl7").write_bytes(cut)  # no final CR: the writer may not be done
    (inbox / "b-next.hl7").write_text(a28("NEXT", "NEXT-1"), newline="")
    (inbox / "c-gzip.hl7").write_bytes(gzip.compress(b"MSH|not this way\r"))
    caplog.set_level(logging.INFO, logger="pamfr.ingest.filedrop")
    error = inbox / "error"
    settings = dict(quiet_period=0.1, poll_interval=0.02, incomplete_timeout=3600)
    with running_watcher(sqlite_url, inbox, **settings) as watcher:
        box = str(inbox)
        wait_for(lambda: (error / "c-gzip.hl7.error").exists(), 30, "the binary file")
        before = bytes_read()

        def held_for() -> float:
            hold = watcher.holds()[box]
            return 0.0 if hold is None else hold.held_for(watcher.clock())

        wait_for(lambda: held_for() > 1.0, 30, "passes")
        assert bytes_read() - before < MiB  # some 50 passes, the file not read again
        hold = watcher.holds()[box]
        assert hold.path.name == "a-cut.hl7" and hold.behind == 1
        assert not (inbox / "done").exists()  # b-next waits behind it
        with open(inbox / "a-cut.hl7", "ab") as f:
            f.write(b"\r")  # completed
        wait_for(lambda: (inbox / "done" / "b-next.hl7.ack").exists(), 30, "b-next.hl7")
        wait_for(lambda: watcher.holds()[box] is None, 30, "the hold to end")
    held = [r.getMessage() for r in caplog.records if "holds its folder back" in r.getMessage()]
    assert len(held) == 1
    assert held[0].startswith(
        "file 'a-cut.hl7' holds its folder back: its content is incomplete, the last segment "
        "has no terminator (CR or LF) (a writer may not be done); held until "
    )
    assert "then error/ unless completed ([filedrop] incomplete_timeout); 1 file(s) wait" in held[0]
    assert (error / "c-gzip.hl7.error").read_text().startswith("c-gzip.hl7: not an HL7 v2 file")
    assert originals(sqlite_url)["NEXT-1"] == 1


def test_a_name_holding_a_newline_is_quoted_on_one_log_line(sqlite_url, tmp_path, caplog):
    inbox = tmp_path / "in"
    inbox.mkdir()
    name = "a.hl7\n2026-01-01 00:00:00,000 INFO pamfr: forged"
    (inbox / name).write_text(a28("NL", "NL-1"), newline="")
    caplog.set_level(logging.INFO, logger="pamfr.ingest.filedrop")
    drop_once(sqlite_url, inbox)
    said = [r.getMessage() for r in caplog.records if "message(s)" in r.getMessage()]
    assert said == [
        "file 'a.hl7\\n2026-01-01 00:00:00,000 INFO pamfr: forged': 1 message(s), AA=1 -> "
        "'done/a.hl7\\n2026-01-01 00:00:00,000 INFO pamfr: forged'"
    ]
    assert all("\n" not in r.getMessage() for r in caplog.records)
    assert os.path.exists(inbox / "done" / name)
    assert Path(inbox / "done" / f"{name}.ack").exists()


def test_a_name_that_is_not_utf8_is_filed_and_quoted(sqlite_url, tmp_path, caplog):
    inbox = tmp_path / "in"
    inbox.mkdir()
    junk = os.fsdecode(b"a-junk\xff.zip")
    (inbox / junk).write_bytes(b"PK\x03\x04 not HL7")
    caplog.set_level(logging.INFO, logger="pamfr.ingest.filedrop")
    (result,) = drop_once(sqlite_url, inbox)
    side = inbox / "error" / f"{junk}.error"
    assert result.moved_to == inbox / "error" / junk and side.exists()
    assert side.read_bytes().startswith(b"a-junk\xff.zip: not an HL7 v2 file")
    said = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("file 'a-junk\\udcff.zip': unreadable (")
