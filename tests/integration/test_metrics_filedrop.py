"""What the file door counts for /metrics: messages by door, files done and in error, the
backlog of files waiting in the inbox, the file holding a folder back (real folders, a real
store, a real daemon)."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from pathlib import Path

from pamfr.hl7.samples import Person, message
from pamfr.ingest.filedrop import FileDropWatcher
from pamfr.path.pipeline import AsyncReceiver
from pamfr.path.receiver import Receiver
from pamfr.service.metrics import Metrics
from pamfr.settings.config import FiledropSettings
from pamfr.store.db import make_engine
from tests.helpers import run_cli, start_daemon
from tests.integration.test_filedrop import wait_for
from tests.integration.test_http import get, http_port, samples, value


def _fill(inbox: Path) -> None:
    inbox.mkdir()
    (inbox / "a-good.hl7").write_text(message("A28", Person(ipp="FD1"), "FD-1"))
    bad = Person(ipp="FD2", ins="123456789012345")  # wrong INS key: AE 102
    (inbox / "b-refused.hl7").write_text(message("A28", bad, "FD-2"))
    (inbox / "c-junk.zip").write_bytes(b"PK\x03\x04 not an HL7 file\n")
    (inbox / "d-upload.part").write_text("still being written\n")  # never taken


def test_files_and_their_messages_are_counted(sqlite_url, tmp_path):
    inbox = tmp_path / "in"
    _fill(inbox)
    metrics = Metrics()

    async def scenario() -> tuple[int, int]:
        engine = make_engine(sqlite_url)
        handler = AsyncReceiver(Receiver(engine), door="file", metrics=metrics)
        settling = FileDropWatcher(
            handler, FiledropSettings(dirs=[str(inbox)], quiet_period=3600), metrics=metrics
        )
        watching = asyncio.create_task(settling.run())
        while settling.backlog == 0:
            await asyncio.sleep(0.02)
        waiting = settling.backlog  # seen, not settled yet
        settling.stop()
        await watching
        watcher = FileDropWatcher(
            handler, FiledropSettings(dirs=[str(inbox)], quiet_period=0), metrics=metrics
        )
        await asyncio.wait_for(watcher.run_once(), 60)
        handler.close()
        engine.dispose()
        return waiting, watcher.backlog

    waiting, left = asyncio.run(scenario())
    assert waiting == 3 and left == 0
    files = metrics.files
    assert files.labels("done")._value.get() == 1
    assert files.labels("error")._value.get() == 2  # the refused message and the junk file
    messages = {
        tuple(s.labels[k] for k in ("door", "event", "outcome", "warning")): s.value
        for s in metrics.messages.collect()[0].samples
        if s.name == "pamfr_messages_total"
    }
    assert messages == {("file", "A28", "AA", "0"): 1, ("file", "A28", "AE", "0"): 1}


def test_a_held_folder_is_told_in_the_log_metrics_and_status_of_a_real_daemon(sqlite_url, tmp_path):
    """A truncated file, then a gzip file, an empty file and a good file: the gzip file goes
    to error/ at once; the truncated file holds the others back, one WARNING says so, and
    /metrics and `pamfr status` show the hold; at the limit it goes to error/, the empty one
    (as old) after it, then the good file is applied."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "d3-truncated.hl7").write_bytes(
        message("A28", Person(ipp="IPPHELD3"), "T-3")[:-1].encode()
    )
    (inbox / "d4-gzip.hl7").write_bytes(gzip.compress(b"MSH|^~\\&|GAM\r"))
    (inbox / "d5-empty.hl7").write_bytes(b"")
    (inbox / "d6-good.hl7").write_text(message("A28", Person(ipp="IPPHELD6"), "G-6"), newline="")
    env = {
        "PAMFR_FILEDROP_DIRS": json.dumps([str(inbox)]),
        "PAMFR_FILEDROP_QUIET_PERIOD": "0.2",
        "PAMFR_FILEDROP_POLL_INTERVAL": "0.1",
        "PAMFR_FILEDROP_INCOMPLETE_TIMEOUT": "8",
        "PAMFR_RECEIVER_PARSE_WORKERS": "1",
    }
    daemon = start_daemon(sqlite_url, tmp_path / "serve.log", "--http", "127.0.0.1:0", env=env)
    error = inbox / "error"
    try:
        port = http_port(daemon)
        wait_for(lambda: "holds its folder back" in daemon.log(), 30, "the hold's WARNING")
        wait_for(lambda: (error / "d4-gzip.hl7.error").exists(), 30, "the gzip file")
        assert (inbox / "d3-truncated.hl7").exists()  # still held
        found = samples(get(port, "/metrics")[1])
        assert value(found, "pamfr_filedrop_held_seconds", inbox=str(inbox)) > 0
        assert value(found, "pamfr_filedrop_held_back_files", inbox=str(inbox)) == 2
        status = run_cli("status", "--http", f"127.0.0.1:{port}")
        assert status.returncode == 0, status.stderr
        assert re.search(
            rf"  held +{re.escape(str(inbox))}: its first file held for [\d,]+ s, 2 file\(s\) "
            r"behind it \(the daemon's log names it\)",
            status.stdout,
        ), status.stdout
        wait_for(lambda: (inbox / "done" / "d6-good.hl7.ack").exists(), 60, "the good file")
        found = samples(get(port, "/metrics")[1])
        assert value(found, "pamfr_filedrop_held_seconds", inbox=str(inbox)) == 0
    finally:
        assert daemon.stop() == 0
    log = daemon.log()
    warned = [line for line in log.splitlines() if "holds its folder back" in line]
    assert len(warned) == 1, log  # once per hold; the empty file's limit had passed already
    assert " WARNING " in warned[0]
    assert (
        "file 'd3-truncated.hl7' holds its folder back: its content is incomplete, the last "
        "segment has no terminator (CR or LF) (a writer may not be done); held until "
    ) in warned[0]
    assert "; 2 file(s) wait behind it" in warned[0]
    assert sorted(p.name for p in error.iterdir()) == [
        f"{n}{x}"
        for n in ("d3-truncated.hl7", "d4-gzip.hl7", "d5-empty.hl7")
        for x in ("", ".error")
    ]
    assert "IPPHELD" not in log  # no identifier in the log
