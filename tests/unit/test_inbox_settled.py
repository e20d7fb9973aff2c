"""When a dropped file is taken (ingest/inbox.Inbox.settled): once unchanged for the quiet
period, in name or mtime order, a file still settling holding back those after it. The clock
is a value passed in: no sleeping."""

from __future__ import annotations

import os
from pathlib import Path

from pamfr.ingest.inbox import Inbox
from pamfr.settings.config import FiledropSettings

QUIET = 2.0


def inbox(path: Path, **settings) -> Inbox:
    return Inbox(path, FiledropSettings(quiet_period=QUIET, **settings))


def names(ready: list) -> list[str]:
    return [path.name for path, _ in ready]


def drop(folder: Path, name: str, data: bytes = b"MSH|x\r", mtime_s: int | None = None) -> Path:
    path = folder / name
    path.write_bytes(data)
    if mtime_s is not None:
        os.utime(path, ns=(mtime_s * 10**9, mtime_s * 10**9))
    return path


def test_a_new_file_is_taken_once_unchanged_for_the_quiet_period(tmp_path):
    box = inbox(tmp_path)
    drop(tmp_path, "a.hl7")
    assert box.settled(100.0) == ([], 1)
    assert box.settled(100.0 + QUIET - 0.01) == ([], 1)
    ready, settling = box.settled(100.0 + QUIET)
    assert names(ready) == ["a.hl7"] and settling == 0
    ((path, signature),) = ready
    assert signature.size == path.stat().st_size


def test_a_change_starts_the_quiet_period_again(tmp_path):
    box = inbox(tmp_path)
    path = drop(tmp_path, "a.hl7", mtime_s=1_000)
    assert box.settled(100.0) == ([], 1)
    path.write_bytes(b"MSH|x\rPID|1\r")  # grows before it settled
    assert box.settled(101.5) == ([], 1)
    assert box.settled(100.0 + QUIET) == ([], 1)  # counted from 101.5, not 100
    assert names(box.settled(101.5 + QUIET)[0]) == ["a.hl7"]
    os.utime(path, ns=(2_000 * 10**9, 2_000 * 10**9))  # touched: same size, new mtime
    assert box.settled(200.0) == ([], 1)


def test_a_file_renamed_over_with_the_same_size_and_mtime_starts_the_quiet_period_again(
    tmp_path,
):
    box = inbox(tmp_path)
    drop(tmp_path, "a.hl7", mtime_s=1_000)
    assert box.settled(100.0) == ([], 1)
    drop(tmp_path, "a.hl7.part", mtime_s=1_000).rename(tmp_path / "a.hl7")
    assert box.settled(100.0 + QUIET) == ([], 1)
    assert names(box.settled(100.0 + 2 * QUIET)[0]) == ["a.hl7"]


def test_a_file_still_settling_holds_back_the_files_after_it(tmp_path):
    box = inbox(tmp_path)
    drop(tmp_path, "a.hl7")
    drop(tmp_path, "c.hl7")
    box.settled(100.0)
    drop(tmp_path, "b.hl7")  # arrives later, between them in name order
    ready, settling = box.settled(100.0 + QUIET)
    assert names(ready) == ["a.hl7"] and settling == 2
    assert names(box.settled(100.0 + 2 * QUIET)[0]) == ["a.hl7", "b.hl7", "c.hl7"]


def test_mtime_order_takes_the_oldest_first_names_breaking_ties(tmp_path):
    box = inbox(tmp_path, order="mtime")
    drop(tmp_path, "z.hl7", mtime_s=1_000)
    drop(tmp_path, "b.hl7", mtime_s=3_000)
    drop(tmp_path, "a.hl7", mtime_s=3_000)
    box.settled(0.0)
    assert names(box.settled(QUIET)[0]) == ["z.hl7", "a.hl7", "b.hl7"]


def test_temporary_files_dot_files_and_folders_are_never_taken(tmp_path):
    box = inbox(tmp_path)
    for name in ("a.hl7.tmp", "b.PART", "c.filepart", ".hidden.hl7"):
        drop(tmp_path, name)
    (tmp_path / "done").mkdir()
    drop(tmp_path, "d.hl7")
    box.settled(0.0)
    ready, settling = box.settled(QUIET)
    assert names(ready) == ["d.hl7"] and settling == 0


def test_a_file_gone_or_forgotten_is_seen_anew(tmp_path):
    box = inbox(tmp_path)
    path = drop(tmp_path, "a.hl7")
    box.settled(0.0)
    assert names(box.settled(QUIET)[0]) == ["a.hl7"]
    box.forget(path)  # moved away, then a file of the same name dropped again
    assert box.settled(10.0) == ([], 1)
    path.unlink()
    assert box.settled(11.0) == ([], 0)
    assert box.seen == {}
