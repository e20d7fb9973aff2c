"""What inotify's events say of a dropped file's writer (ingest/closes.WriteEvents), and how the
settle decision uses it (ingest/inbox.Inbox): a file that appears while its folder is
watched is taken only once closed after its last write, then quiet; a file there before the
watch began keeps the polling rules. The events are fed by hand, the clock is a value."""

from __future__ import annotations

from pathlib import Path

from pamfr.ingest.closes import Close, Signature, WriteEvents, signature_of
from pamfr.ingest.inbox import EVENT_GRACE, NO_EVENTS_RETRY, Inbox, Listed
from pamfr.settings.config import FiledropSettings

QUIET = 2.0
A = Signature(10, 1_000, 7, 1_000)
A_LONGER = Signature(20, 2_000, 7, 2_000)


def watched(path: Path, **settings) -> tuple[Inbox, WriteEvents]:
    box = Inbox(path, FiledropSettings(quiet_period=QUIET, **settings))
    events = WriteEvents()
    box.use_events(events)
    return box, events


def names(ready: list) -> list[str]:
    return [path.name for path, _ in ready]


def test_written_then_closed_then_written_again():
    events = WriteEvents()
    assert events.close_of("a.hl7", A) is Close.NO_EVENT
    events.written("a.hl7")
    assert events.close_of("a.hl7", A) is Close.OPEN
    events.closed("a.hl7", A)
    assert events.close_of("a.hl7", A) is Close.CLOSED
    # Appended to after the close, its IN_MODIFY not read yet: the size and mtime tell.
    assert events.close_of("a.hl7", A_LONGER) is Close.OPEN
    events.written("a.hl7")
    assert events.close_of("a.hl7", A) is Close.OPEN
    events.gone("a.hl7")
    assert events.close_of("a.hl7", A) is Close.NO_EVENT


def test_a_rename_keeps_a_file_still_written_waiting_and_takes_a_closed_one_whole():
    events = WriteEvents()
    events.written("a.hl7.part")
    events.closed("a.hl7.part", A)
    events.moved("a.hl7.part", "a.hl7", A)  # RNFR/RNTO after the upload
    assert events.close_of("a.hl7", A) is Close.CLOSED
    assert events.close_of("a.hl7.part", A) is Close.NO_EVENT
    events.written("b.tmp")
    events.moved("b.tmp", "b.hl7", A)  # renamed while its writer still holds it
    assert events.close_of("b.hl7", A) is Close.OPEN
    events.closed("b.hl7", A_LONGER)
    assert events.close_of("b.hl7", A_LONGER) is Close.CLOSED


def test_a_new_mtime_or_mode_after_the_close_is_not_a_write():
    events = WriteEvents()
    events.closed("a.hl7", A)
    touched = Signature(A.size, 5_000, A.ino, 5_001)  # an FTP client's MFMT
    events.attributes_changed("a.hl7", touched)
    assert events.close_of("a.hl7", touched) is Close.CLOSED
    events.attributes_changed("a.hl7", A_LONGER)  # grown: a write is on its way
    assert events.close_of("a.hl7", A_LONGER) is Close.OPEN
    events.written("b.hl7")
    events.attributes_changed("b.hl7", A)
    assert events.close_of("b.hl7", A) is Close.OPEN


def test_a_link_made_in_the_folder_keeps_the_polling_rules():
    events = WriteEvents()
    events.created("a.hl7", link=True)  # a symlink, or a hard link: no writer will close it
    assert events.close_of("a.hl7", A) is Close.UNKNOWN
    assert events.close_of("a.hl7", A_LONGER) is Close.UNKNOWN
    events.moved("a.hl7", "b.hl7", A)
    assert events.close_of("b.hl7", A) is Close.UNKNOWN
    events.written("b.hl7")  # written through this name after all: its close will tell
    assert events.close_of("b.hl7", A) is Close.OPEN
    events.created("c.hl7", link=False)
    assert events.close_of("c.hl7", A) is Close.OPEN


def test_lost_events_forget_everything():
    events = WriteEvents()
    events.written("a.hl7")
    generation = events.generation
    events.lost()
    assert events.close_of("a.hl7", A) is Close.NO_EVENT
    assert events.generation == generation + 1


def test_a_file_waits_for_its_writer_to_close_it_whatever_the_quiet_period(tmp_path):
    box, events = watched(tmp_path)
    path = tmp_path / "a.hl7"
    events.written("a.hl7")
    assert box.decide([Listed(path, A, Close.OPEN)], 100.0) == ([], 1)
    assert box.decide([Listed(path, A, Close.OPEN)], 100.0 + 60) == ([], 1)
    assert box.held == (path, Close.OPEN)
    # Closed after its last write: taken once quiet, counted from the last change seen.
    assert box.decide([Listed(path, A, Close.CLOSED)], 161.0) == ([(path, A)], 0)
    assert box.decide([Listed(path, A_LONGER, Close.CLOSED)], 162.0) == ([], 1)
    assert box.held is None  # not quiet yet: nothing to say
    assert names(box.decide([Listed(path, A_LONGER, Close.CLOSED)], 162.0 + QUIET)[0]) == ["a.hl7"]


def test_a_file_never_closed_keeps_the_polling_rules_once_unchanged_for_the_limit(tmp_path):
    box, _ = watched(tmp_path, incomplete_timeout=30.0)
    a, b = tmp_path / "a.hl7", tmp_path / "b.hl7"  # a: truncated by path, say: no close
    listed = [Listed(a, A, Close.OPEN), Listed(b, A, Close.CLOSED)]
    box.decide(listed, 0.0)
    assert box.decide(listed, 29.9) == ([], 2)
    assert box.gave_up == []
    assert names(box.decide(listed, 30.0)[0]) == ["a.hl7", "b.hl7"]
    assert box.gave_up == [a]  # said once
    assert names(box.decide(listed, 31.0)[0]) == ["a.hl7", "b.hl7"]
    assert box.gave_up == []
    # Changed again: its writer is awaited anew, the limit counted from the change.
    longer = [Listed(a, A_LONGER, Close.OPEN), Listed(b, A, Close.CLOSED)]
    assert box.decide(longer, 40.0) == ([], 2)
    assert box.decide(longer, 69.9) == ([], 2)
    assert names(box.decide(longer, 70.0)[0]) == ["a.hl7", "b.hl7"]
    assert box.gave_up == [a]


def test_a_file_open_for_writing_holds_back_the_files_after_it(tmp_path):
    box, _ = watched(tmp_path)
    a, b = tmp_path / "a.hl7", tmp_path / "b.hl7"
    listed = [Listed(b, A, Close.CLOSED), Listed(a, A, Close.OPEN)]
    box.decide(listed, 0.0)
    assert box.decide(listed, QUIET) == ([], 2)


def test_files_there_before_the_watch_keep_the_polling_rules(tmp_path):
    box, events = watched(tmp_path)
    (tmp_path / "old.hl7").write_bytes(b"MSH|x\r")
    assert box.settled(0.0) == ([], 1)
    assert names(box.settled(QUIET)[0]) == ["old.hl7"]  # no event will ever tell its close
    (tmp_path / "new.hl7").write_bytes(b"MSH|x\r")
    box.forget(tmp_path / "old.hl7")
    (tmp_path / "old.hl7").unlink()
    box.settled(10.0)
    assert box.settled(10.0 + QUIET) == ([], 1)  # appeared while watched: its close is awaited
    assert box.held == (tmp_path / "new.hl7", Close.NO_EVENT)
    events.closed("new.hl7", signature_of(tmp_path / "new.hl7"))
    assert names(box.settled(10.0 + QUIET)[0]) == ["new.hl7"]


def test_after_lost_events_the_files_there_keep_the_polling_rules(tmp_path):
    box, events = watched(tmp_path)
    box.settled(0.0)
    (tmp_path / "a.hl7").write_bytes(b"MSH|x\r")
    events.written("a.hl7")
    box.settled(1.0)
    assert box.settled(1.0 + QUIET) == ([], 1)
    events.lost()  # its close may have been among the events lost
    box.settled(10.0)
    assert names(box.settled(10.0 + QUIET)[0]) == ["a.hl7"]


def test_a_new_file_inotify_says_nothing_of_is_reported_after_the_grace(tmp_path):
    box, _ = watched(tmp_path)
    path = tmp_path / "a.hl7"
    box.decide([Listed(path, A, Close.NO_EVENT)], 0.0)
    box.decide([Listed(path, A_LONGER, Close.NO_EVENT)], EVENT_GRACE)  # changes: still new
    assert box.silent is None
    box.decide([Listed(path, A_LONGER, Close.NO_EVENT)], EVENT_GRACE + 0.1)
    assert box.silent == path


def test_events_lost_while_the_folder_is_listed_never_read_as_silence(tmp_path):
    """The generation and the states are read together: events lost between the two must not
    make a file seen long ago look like one inotify never reported (which would switch the
    folder to polling)."""

    class LosingWhileListed(Inbox):
        lose = False

        def list_files(self):
            found = super().list_files()
            if self.lose:
                self.events.lost()  # on watchdog's thread, in the middle of a pass
            return found

    box = LosingWhileListed(tmp_path, FiledropSettings(quiet_period=QUIET))
    events = WriteEvents()
    box.use_events(events)
    box.settled(0.0)
    (tmp_path / "a.hl7").write_bytes(b"MSH|x\r")
    events.written("a.hl7")
    box.settled(1.0)
    assert box.held is None and box.settled(1.0 + QUIET) == ([], 1)
    assert box.held == (tmp_path / "a.hl7", Close.OPEN)
    box.lose = True
    box.settled(1.0 + 2 * EVENT_GRACE)
    assert box.silent is None
    assert names(box.settled(1.0 + 2 * EVENT_GRACE + QUIET)[0]) == ["a.hl7"]  # polling rules


def test_a_folder_polled_for_its_silence_tries_inotify_again_later(tmp_path):
    box, _ = watched(tmp_path)
    box.fall_back(100.0, "inotify reported nothing of a.hl7")
    assert box.events is None and box.no_events == (
        f"inotify reported nothing of a.hl7; inotify is tried again in {NO_EVENTS_RETRY:g} s"
    )
    assert not box.events_again(100.0 + NO_EVENTS_RETRY - 1)
    assert box.events_again(100.0 + NO_EVENTS_RETRY)
    assert box.no_events is None
    box.use_events(WriteEvents())
    box.fall_back(1_000.0, "silent again")  # each time it stays silent, twice as long
    assert not box.events_again(1_000.0 + 2 * NO_EVENTS_RETRY - 1)
    assert box.events_again(1_000.0 + 2 * NO_EVENTS_RETRY)


def test_the_files_settled_behind_the_first_file_not_ready_are_listed_apart(tmp_path):
    """They may go to error/ at once when they can never be applied (the watcher decides);
    a file not quiet yet behind it is not among them."""
    box, _ = watched(tmp_path)
    a, b, c, d = (tmp_path / f"{n}.hl7" for n in "abcd")
    early = [Listed(a, A, Close.CLOSED), Listed(b, A, Close.OPEN), Listed(c, A, Close.CLOSED)]
    box.decide(early, 100.0)
    listed = [*early, Listed(d, A, Close.CLOSED)]
    box.decide(listed, 100.0 + QUIET - 0.5)  # d appears later
    ready, settling = box.decide(listed, 100.0 + QUIET)
    assert names(ready) == ["a.hl7"] and settling == 3
    assert box.blocker == b and box.held == (b, Close.OPEN)
    assert box.behind == [(c, A)] and box.after_blocker == 2
    assert box.until(b, Close.OPEN) == 100.0 + box.settings.incomplete_timeout
    assert names(box.decide(listed, 200.0)[0]) == ["a.hl7"]
    assert names(box.behind) == ["c.hl7", "d.hl7"]
