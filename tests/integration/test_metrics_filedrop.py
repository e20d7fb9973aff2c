"""What the file door counts for /metrics: messages by door, files done and in error, the
backlog of files waiting in the inbox (real folders, a real store)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pamfr.hl7.samples import Person, message
from pamfr.ingest.filedrop import FileDropWatcher
from pamfr.path.pipeline import AsyncReceiver
from pamfr.path.receiver import Receiver
from pamfr.service.config import FiledropSettings
from pamfr.service.metrics import Metrics
from pamfr.store.db import make_engine


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
