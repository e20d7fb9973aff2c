"""A log line cannot be forged by what a sender chooses: a dropped file's name, a control id.
Real daemon (`pamfr serve`), real file drop folder, real MLLP socket on 127.0.0.1."""

from __future__ import annotations

import json
import time

from pamfr.store.db import upgrade
from tests.helpers import send, start_daemon

FORGED = "2026-01-01 00:00:00,000 ERROR pamfr.forged: FORGED LINE"


def test_a_file_name_or_control_id_with_a_newline_stays_on_its_own_log_line(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    db_url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(db_url)
    daemon = start_daemon(
        db_url,
        tmp_path / "daemon.log",
        env={
            "PAMFR_FILEDROP_DIRS": json.dumps([str(inbox)]),
            "PAMFR_FILEDROP_POLL_INTERVAL": "0.2",
        },
    )
    try:
        body = (
            "MSH|^~\\&|GAM|CHU-X|DPI|CHU-X|20240306111154||ADT^A28^ADT_A05|{cid}|T|2.5\r"
            "EVN||20240306111154\rPID|||{ipp}^^^CHU-X^PI||DOE^JOHN||19700101|M\r"
        )
        (inbox / f"a\n{FORGED}.hl7").write_text(body.format(cid="LOGF-1", ipp="LF1"))
        send(daemon.port, [body.format(cid=f"LOGF-2\n{FORGED}", ipp="LF2")])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "LOGF-1" not in daemon.log():
            time.sleep(0.1)
        time.sleep(0.5)
        lines = daemon.log().splitlines()
        assert any("LOGF-1" in line for line in lines)
        assert any("LOGF-2" in line for line in lines)
        assert not [line for line in lines if line.startswith(FORGED[:20])]
    finally:
        daemon.stop()
