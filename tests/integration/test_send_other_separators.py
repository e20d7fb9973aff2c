"""`pamfr send` reads the ACK of a sender that uses other separators: pamfr echoes them."""

from __future__ import annotations

import json
import re

from pamfr.hl7.samples import Person, message
from tests.helpers import pamfr_server, run_cli


def test_send_reads_msa_and_err_with_hash_separators(sqlite_url, tmp_path):
    good = message("A28", Person("SEP1"), "SEP-1").replace("|", "#")
    bad = message("A28", Person("SEP2", birth_date="19790231"), "SEP-2").replace("|", "#")
    files = []
    for name, text in (("good.hl7", good), ("bad.hl7", bad)):
        path = tmp_path / name
        path.write_text(text)
        files.append(str(path))
    with pamfr_server(sqlite_url) as server:
        result = run_cli("send", *files, "--to", f"127.0.0.1:{server.port}")
    lines = re.findall(r"^(\S+) #1: (\S+)((?:\n    ERR .*)*)", result.stdout, re.M)
    answers = {name.rsplit("/", 1)[-1]: (code, errs.strip()) for name, code, errs in lines}
    assert answers["good.hl7"] == ("AA", "")
    assert answers["bad.hl7"][0] == "AE"
    assert answers["bad.hl7"][1].startswith("ERR 102 PID^1^7 PID-7 is not a valid date")


def test_replay_report_reads_answers_with_hash_separators(sqlite_url, tmp_path):
    good = message("A28", Person("SEP3"), "SEP-3").replace("|", "#")
    bad = message("A28", Person("SEP4", birth_date="19790231"), "SEP-4").replace("|", "#")
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "1.hl7").write_text(f"{good}\r{bad}", newline="")
    reports = {}
    with pamfr_server(sqlite_url) as server:
        report = tmp_path / "to.json"
        run_cli("replay", str(tmp_path / "set"), "--to", f"127.0.0.1:{server.port}",
                "--report", str(report))  # fmt: skip
        reports["to"] = json.loads(report.read_text())
    local_db = f"sqlite:///{tmp_path / 'local.db'}"
    report = tmp_path / "local.json"
    run_cli("replay", str(tmp_path / "set"), "--local", "--db", local_db, "--report", str(report))
    reports["local"] = json.loads(report.read_text())
    for door, summary in reports.items():
        assert summary["ack_codes"] == {"AA": 1, "AE": 1}, door
        (refused,) = [m for m in summary["not_aa"] if m["control_id"] == "SEP-4"]
        assert refused["errors"][0].startswith("102 PID^1^7 PID-7 is not a valid date"), door
