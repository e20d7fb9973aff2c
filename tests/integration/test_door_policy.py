"""The file door applies the operator's policy the same way under `pamfr watch` and under
`pamfr serve`: both build their receiver in one place (pamfr/path/assemble.py)."""

from __future__ import annotations

import time
from pathlib import Path

from pamfr.hl7.samples import Person, message
from tests.helpers import log_rows, run_cli, start_daemon

CONFIG = """
[server]
allowed_senders = ["GAM|CHU-X"]

[receiver]
processing_ids = ["T"]

[hl7]
default_charset = "8859/15"
"""


def _drop(inbox: Path) -> None:
    inbox.mkdir()
    allowed = message("A28", Person("POL1"), "POL-1", charset="")
    accented = allowed.replace("POL-1", "POL-2").replace("POL1", "POL2")
    accented = accented.replace("PAT-TEST", "LÉON").encode("iso-8859-15")  # MSH-18 empty
    other_sender = message("A28", Person("POL3"), "POL-3").replace("|GAM|", "|GAM-B|", 1)
    production = message("A28", Person("POL4"), "POL-4").replace("|T|2.5", "|P|2.5", 1)
    (inbox / "1-allowed.hl7").write_text(allowed, newline="")
    (inbox / "2-accented.hl7").write_bytes(accented)
    (inbox / "3-other-sender.hl7").write_text(other_sender, newline="")
    (inbox / "4-production.hl7").write_text(production, newline="")


def _log(url: str) -> list[tuple]:
    return log_rows(
        url, "control_id", "door", "outcome", "err_codes", "charset", order_by="control_id"
    )


def test_watch_and_serve_apply_the_same_policy_to_a_dropped_file(tmp_path):
    config = tmp_path / "pamfr.toml"
    config.write_text(CONFIG)

    watched = tmp_path / "watched"
    _drop(watched)
    watch_url = f"sqlite:///{tmp_path / 'watch.db'}"
    run_cli("upgrade", "--db", watch_url)
    result = run_cli(
        "watch", str(watched), "--config", str(config), "--db", watch_url,
        "--quiet-period", "0", "--once",
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr

    served = tmp_path / "served"
    _drop(served)
    serve_config = tmp_path / "serve.toml"
    serve_config.write_text(f'{CONFIG}\n[filedrop]\ndirs = ["{served}"]\nquiet_period = 0\n')
    serve_url = f"sqlite:///{tmp_path / 'serve.db'}"
    run_cli("upgrade", "--db", serve_url)
    daemon = start_daemon(serve_url, tmp_path / "serve.log", "--config", str(serve_config))
    try:
        deadline = time.monotonic() + 60
        while len(_log(serve_url)) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        assert daemon.stop() == 0

    by_watch, by_serve = _log(watch_url), _log(serve_url)
    assert by_watch == by_serve
    outcomes = {control_id: (door, code, errs) for control_id, door, code, errs, _ in by_watch}
    assert outcomes == {
        "POL-1": ("file", "AA", None),
        # MSH-18 empty with 8-bit bytes: read as the configured default, with a warning
        "POL-2": ("file", "AA", "103"),
        "POL-3": ("file", "AR", "207"),  # GAM-B is not an allowed sender
        "POL-4": ("file", "AR", "202"),  # processing id P is not accepted here
    }
