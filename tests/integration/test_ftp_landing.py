"""Files landing through a real FTP server (pyftpdlib on 127.0.0.1) as GAMs upload them: a
direct STOR in slow chunks with pauses longer than the quiet period, STOR under a temporary
name then RNFR/RNTO, a file empty at first, an empty file, a truncated batch. Nothing
half-written is ever applied; every message of every file is applied exactly once."""

from __future__ import annotations

import ftplib
import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

from pamfr.hl7.samples import Person, message
from pamfr.store.db import make_engine
from tests.integration.test_filedrop import log_rows, running_watcher, wait_for

QUIET = 0.4
PAUSE = 1.5  # longer than the quiet period: the file sits unchanged, half written
LIMIT = 4.0  # [filedrop] incomplete_timeout of the test


@contextmanager
def ftp_server(root: Path) -> Iterator[int]:
    authorizer = DummyAuthorizer()
    authorizer.add_user("gam", "secret", str(root), perm="elradfmw")
    handler = type("Handler", (FTPHandler,), {"authorizer": authorizer, "banner": "test"})
    server = FTPServer(("127.0.0.1", 0), handler)
    port = server.socket.getsockname()[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.1}, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.close_all()
        thread.join(10)


class SlowUpload(io.RawIOBase):
    """What ftplib reads for STOR: the content in chunks, pausing after the given offsets."""

    def __init__(self, data: bytes, pauses: dict[int, float]) -> None:
        self.data, self.pos, self.pauses = data, 0, dict(pauses)

    def read(self, size: int = -1) -> bytes:
        cut = min((p for p in self.pauses if p > self.pos), default=len(self.data))
        end = min(len(self.data), self.pos + (size if size > 0 else len(self.data)), cut)
        chunk = self.data[self.pos : end]
        self.pos = end
        if end in self.pauses:
            time.sleep(self.pauses.pop(end))
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


def test_ftp_uploads_are_taken_only_when_complete(sqlite_url, tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    big, big_ids = file_of("BIG", 100)
    # Paused once in the middle of a segment of message 29, once right after a segment end
    # (the content then looks complete: only the writer still holding the file tells).
    starts = [big.index(f"|BIG-{n}|".encode()) for n in (29, 60)]
    mid_segment = starts[0] + 5
    segment_end = big.index(b"\n", starts[1]) + 1
    renamed, renamed_ids = file_of("REN", 5)
    late, late_ids = file_of("LATE", 3)
    batch, batch_ids = file_of("BAT", 4)
    truncated = b"FHS|^~\\&|GAM\nBHS|^~\\&|GAM\n" + batch  # no BTS, no FTS
    settings = dict(quiet_period=QUIET, poll_interval=0.05, incomplete_timeout=LIMIT)
    with ftp_server(inbox) as port, running_watcher(sqlite_url, inbox, **settings):
        upload(port, "a-big.hl7", big, {mid_segment: PAUSE, segment_end: PAUSE})
        with ftplib.FTP() as ftp:  # STOR under a temporary name, then RNFR/RNTO
            ftp.connect("127.0.0.1", port, timeout=30)
            ftp.login("gam", "secret")
            ftp.storbinary("STOR b-renamed.hl7.part", io.BytesIO(renamed))
            time.sleep(QUIET * 2)
            ftp.rename("b-renamed.hl7.part", "b-renamed.hl7")
        upload(port, "c-late.hl7", late, {0: PAUSE})  # 0 bytes for a while, then filled
        upload(port, "d-empty.hl7", b"")
        upload(port, "e-truncated.hl7", truncated)
        done, error = inbox / "done", inbox / "error"
        wait_for(lambda: (done / "c-late.hl7").exists(), 60, "the files to be taken")
        wait_for(lambda: (error / "e-truncated.hl7.error").exists(), 60, "the limit")

    assert sorted(p.name for p in done.iterdir()) == sorted(
        f"{n}{x}" for n in ("a-big.hl7", "b-renamed.hl7", "c-late.hl7") for x in ("", ".ack")
    )
    assert sorted(p.name for p in error.iterdir()) == sorted(
        f"{n}{x}" for n in ("d-empty.hl7", "e-truncated.hl7") for x in ("", ".error")
    )
    assert (done / "a-big.hl7").read_bytes() == big
    assert "empty" in (error / "d-empty.hl7.error").read_text()
    assert "no BTS" in (error / "e-truncated.hl7.error").read_text()
    engine = make_engine(sqlite_url)
    rows = log_rows(engine)
    engine.dispose()
    applied = Counter(r["control_id"] for r in rows if r["duplicate_of"] is None)
    assert applied == Counter(big_ids + renamed_ids + late_ids)  # each once, nothing else
    assert {r["outcome"] for r in rows} == {"AA"}
    assert not set(batch_ids) & {r["control_id"] for r in rows}
