"""`pamfr replay`: --local and --to a running `pamfr serve`, the summary, the JSON report,
--expect, --rewrite-control-ids, the exit codes; and `pamfr generate`."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from pamfr.cli import main
from pamfr.hl7.samples import Person, message
from pamfr.ingest.messagesets import rewrite_control_id
from pamfr.store.db import make_engine
from pamfr.store.schema import message as message_table
from tests.helpers import run_cli, start_daemon


@pytest.fixture(autouse=True)
def _keep_pytest_logging(monkeypatch):
    """In-process runs must not replace the root log handlers of the test session."""
    monkeypatch.setattr("pamfr.cli.ingest.setup_logging", lambda level, fmt=None: None)


def cli(*args: str) -> Result:
    """`pamfr ARGS` in this process (faster than a subprocess; run_cli covers the real one)."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def a28(ipp: str, control_id: str, **kw) -> str:
    return message("A28", Person(ipp=ipp, **kw), control_id)


def log_rows(url: str) -> list[dict]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(message_table).order_by(message_table.c.id)).mappings()
            return [dict(r) for r in rows]
    finally:
        engine.dispose()


def make_set(folder: Path, count: int, per_file: int, seed: int = 7, prefix: str = "G") -> None:
    result = CliRunner().invoke(
        main,
        ["generate", "--count", str(count), "--per-file", str(per_file)]
        + ["--out", str(folder), "--seed", str(seed), "--prefix", prefix],
    )
    assert result.exit_code == 0, result.output


def events_of(folder: Path) -> Counter:
    return Counter(
        line.split("|")[8].split("^")[1]
        for f in sorted(folder.rglob("*.hl7"))
        for line in f.read_bytes().decode().split("\r")
        if line.startswith("MSH")
    )


def control_ids_by_ipp(folder: Path) -> dict[str, list[str]]:
    """For each IPP (PID-3, MRG-1), the control ids of its messages in the order of the files."""
    found: dict[str, list[str]] = {}
    for f in sorted(folder.rglob("*.hl7")):
        for text in f.read_bytes().decode().split("MSH|")[1:]:
            segments = ("MSH|" + text).replace("\n", "\r").split("\r")
            control_id = segments[0].split("|")[9]
            for seg in segments:
                fields = seg.split("|")
                ids = fields[3] if fields[0] == "PID" else fields[1] if fields[0] == "MRG" else ""
                for rep in filter(None, ids.split("~")):
                    if rep.split("^")[4:5] == ["PI"]:
                        found.setdefault(rep.split("^")[0], []).append(control_id)
    return found


# -- generate ------------------------------------------------------------------------------


def test_generate_writes_a_reproducible_set_and_never_overwrites(tmp_path):
    make_set(tmp_path / "a", 7, 3)
    make_set(tmp_path / "b", 7, 3)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["pamfr-0001.hl7", "pamfr-0002.hl7", "pamfr-0003.hl7"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    counts = [(tmp_path / "a" / n).read_bytes().count(b"MSH|") for n in names]
    assert counts == [3, 3, 1]
    again = CliRunner().invoke(main, ["generate", "--count", "2", "--out", str(tmp_path / "a")])
    assert again.exit_code == 1 and "exists" in again.output


# -- --local -------------------------------------------------------------------------------


def test_replay_local_summary_and_report(db_url, tmp_path):
    sets = tmp_path / "sets"
    make_set(sets / "day1", 24, 8)
    make_set(sets / "day2", 6, 3, seed=8, prefix="H")
    # What the file drop leaves beside a file is not replayed.
    (sets / "day1" / "pamfr-0001.hl7.ack").write_text("MSH|^~\\&|ACK\rMSA|AA|X\r")
    report = tmp_path / "report.json"
    result = run_cli("replay", str(sets), "--local", "--db", db_url, "--report", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "replayed 30 message(s) from 5 file(s) into " in out and "(local)" in out
    assert "messages/s" in out
    assert "ACK codes: AA 30" in out
    expected_events = events_of(sets)
    assert "events:    " + ", ".join(f"{e} {n}" for e, n in expected_events.most_common()) in out
    assert "not AA" not in out
    data = json.loads(report.read_text())
    assert data["messages"] == 30 and data["files"] == 5 and data["all_aa"] is True
    assert data["ack_codes"] == {"AA": 30}
    assert data["events"] == dict(expected_events)
    assert data["not_aa"] == [] and data["elapsed_s"] > 0 and data["messages_per_s"] > 0
    rows = log_rows(db_url)
    assert len(rows) == 30 and {r["door"] for r in rows} == {"replay"}
    # Files in sorted order, messages in file order.
    assert [r["peer"].split("/sets/")[1] for r in rows[:9]] == ["day1/pamfr-0001.hl7"] * 8 + [
        "day1/pamfr-0002.hl7"
    ]
    assert [r["control_id"] for r in rows[:3]] == ["G000000000", "G000000001", "G000000002"]


def test_replay_local_errors_exit_codes_and_json_report(sqlite_url, tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "a.hl7").write_text(
        a28("OK-1", "OK-1")
        + a28("BAD-INS", "BAD-INS", ins="123456789012345")
        + a28("BAD-EVT", "BAD-EVT").replace("ADT^A28^ADT_A05", "ADT^A99^ADT_A01"),
        newline="",
    )
    (folder / "b.bin").write_bytes(b"\x00\x01\x02 not a message at all")
    report = tmp_path / "r.json"
    args = ["replay", str(folder), "--local", "--db", sqlite_url, "--report", str(report)]
    result = cli(*args, "--workers", "0")
    assert result.exit_code == 1, result.stderr
    out = result.stdout
    assert "ACK codes: AA 1, AE 1, AR 1" in out
    assert "ERR codes: 102 1, 201 1" in out
    assert "not AA (2):" in out
    assert f"{folder / 'a.hl7'} #2 control_id=BAD-INS AE 102 PID^1^3 invalid INS" in out
    assert f"{folder / 'a.hl7'} #3 control_id=BAD-EVT AR 201 MSH^1^9^1^2" in out
    assert f"unreadable file {folder / 'b.bin'}: no MSH segment" in out
    data = json.loads(report.read_text())
    assert data["all_aa"] is False
    assert [(e["index"], e["control_id"], e["ack_code"]) for e in data["not_aa"]] == [
        (2, "BAD-INS", "AE"),
        (3, "BAD-EVT", "AR"),
    ]
    assert data["not_aa"][0]["errors"][0].startswith("102 PID^1^3 invalid INS")
    assert data["not_aa"][0]["file"] == str(folder / "a.hl7")
    assert data["err_codes"] == {"102": 1, "201": 1}
    assert data["unreadable"] == [
        {
            "file": str(folder / "b.bin"),
            "reason": "no MSH segment found: not an HL7 v2 message file",
        }
    ]
    allowed = cli(*args, "--allow-errors", "--rewrite-control-ids")
    assert allowed.exit_code == 0, allowed.stderr
    assert "ACK codes: AA 1, AE 1, AR 1" in allowed.stdout
    neither = cli("replay", str(folder))
    assert neither.exit_code == 2 and "--to HOST:PORT or --local" in neither.stderr


# -- --expect ------------------------------------------------------------------------------


def test_expect_matches_by_ipp_and_catches_differences(tmp_path):
    folder = tmp_path / "set"
    make_set(folder, 40, 20, seed=3)
    assert events_of(folder)["A40"] >= 1  # merges, so merged_into is compared too
    extra = tmp_path / "extra.hl7"
    extra.write_text(a28("EXTRA", "EXTRA-1"), newline="")
    first, second = f"sqlite:///{tmp_path / 'one.db'}", f"sqlite:///{tmp_path / 'two.db'}"
    expected_file = tmp_path / "expected.json"
    # Store one gets an extra patient first, so its ids are shifted against store two.
    made = cli(
        "replay", str(extra), str(folder), "--local", "--workers", "0", "--db", first,
        "--write-expect", str(expected_file),
    )  # fmt: skip
    assert made.exit_code == 0, made.stderr
    state = json.loads(expected_file.read_text())
    state = [p for p in state if p["identifiers"][0]["value"] != "EXTRA"]
    merged = [p for p in state if p["merged_into"] is not None]
    assert merged
    expected_file.write_text(json.dumps(state))

    same = cli(
        "replay",
        str(folder),
        "--local",
        "--workers",
        "0",
        "--db",
        second,
        "--expect",
        str(expected_file),
    )
    assert same.exit_code == 0, same.stdout + same.stderr
    assert "expected state: identical" in same.stdout

    changed = json.loads(expected_file.read_text())
    target = next(p for p in changed if p["merged_into"] is None and p["active"])
    name = target["birth_name"]
    target["birth_name"] = "NOT-THE-NAME"
    removed = changed.pop()
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(changed))
    report = tmp_path / "r.json"
    diff = cli(
        "replay", str(folder), "--local", "--workers", "0", "--db", second, "--expect", str(wrong),
        "--allow-errors", "--report", str(report),
    )  # fmt: skip
    assert diff.exit_code == 1, diff.stdout + diff.stderr
    ipp = next(i for i in target["identifiers"] if i["type"] == "PI")
    label = f"IPP {ipp['oid']}|{ipp['value']}"
    assert "expected state: 2 difference(s)" in diff.stdout
    assert f'{label}: birth_name: expected "NOT-THE-NAME", found "{name}"' in diff.stdout
    removed_ipp = next(i for i in removed["identifiers"] if i["type"] == "PI")["value"]
    assert f"{removed_ipp}: not expected" in diff.stdout
    data = json.loads(report.read_text())
    assert {(d["key"], d["expected"]) for d in data["expect"]["differences"]} == {
        ("birth_name", "NOT-THE-NAME"),
        (None, None),
    }


# -- --rewrite-control-ids -----------------------------------------------------------------


def test_rewrite_control_ids_changes_only_msh10():
    raw = b"\xef\xbb\xbfMSH#^~\\&#GAM#CHU-X#DPI#CHU-X#2024##ADT^A28#OLD-ID#P#2.5\nPID#1#OLD-ID\n"
    assert rewrite_control_id(raw, "NEW") == raw.replace(b"OLD-ID#P", b"NEW#P")
    assert rewrite_control_id(b"PID|1|2", "NEW") == b"PID|1|2"


def test_rewrite_control_ids_replays_a_set_twice_into_one_store(sqlite_url, tmp_path):
    folder = tmp_path / "set"
    make_set(folder, 10, 5, seed=11)
    first = cli("replay", str(folder), "--local", "--workers", "0", "--db", sqlite_url)
    assert first.exit_code == 0, first.stderr
    # The same set again: every message is a duplicate, answered AA and not applied.
    again = cli("replay", str(folder), "--local", "--workers", "0", "--db", sqlite_url)
    assert again.exit_code == 0
    assert "ACK codes: AA 10 (10 duplicate(s))" in again.stdout
    rewritten = cli(
        "replay",
        str(folder),
        "--local",
        "--workers",
        "0",
        "--db",
        sqlite_url,
        "--rewrite-control-ids",
    )
    assert rewritten.exit_code == 0, rewritten.stdout
    assert "ACK codes: AA 10\n" in rewritten.stdout
    rows = log_rows(sqlite_url)
    assert len(rows) == 30
    assert [r["duplicate_of"] is None for r in rows] == [True] * 10 + [False] * 10 + [True] * 10
    new_ids = [r["control_id"] for r in rows[20:]]
    assert len(set(new_ids)) == 10 and not set(new_ids) & {r["control_id"] for r in rows[:10]}
    for original, replayed in zip(rows[:10], rows[20:], strict=True):
        a, b = original["raw"].split(b"|"), replayed["raw"].split(b"|")
        assert a[9] != b[9] and a[:9] + a[10:] == b[:9] + b[10:]


# -- --to ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_replay_to_a_running_serve(sqlite_url, tmp_path):
    folder = tmp_path / "set"
    make_set(folder, 15, 5, seed=5)
    (folder / "z-bad.hl7").write_text(
        a28("OK-9", "OK-9") + a28("BAD", "BAD-1", ins="123456789012345"), newline=""
    )
    serve = start_daemon(sqlite_url, tmp_path / "serve.log")
    port = serve.port
    try:
        report = tmp_path / "r.json"
        result = run_cli(
            "replay", str(folder), "--to", f"127.0.0.1:{port}", "--connections", "2",
            "--timeout", "10", "--report", str(report), "--db", sqlite_url,
            "--write-expect", str(tmp_path / "state.json"),
        )  # fmt: skip
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"from 4 file(s) to 127.0.0.1:{port} (mllp)" in result.stdout
        assert "ACK codes: AA 16, AE 1" in result.stdout
        assert f"{folder / 'z-bad.hl7'} #2 control_id=BAD-1 AE 102 PID^1^3" in result.stdout
        data = json.loads(report.read_text())
        assert data["mode"] == "mllp" and data["messages"] == 17
        assert data["events"] == dict(events_of(folder).most_common())
        assert len(json.loads((tmp_path / "state.json").read_text())) >= 8
    finally:
        assert serve.stop() == 0
    rows = log_rows(sqlite_url)
    assert len(rows) == 17 and {r["door"] for r in rows} == {"mllp"}
    # Two connections, but each patient's messages in the order of the files.
    logged = [r["control_id"] for r in rows]
    for ipp, control_ids in control_ids_by_ipp(folder).items():
        assert [c for c in logged if c in control_ids] == control_ids, ipp
    assert len({r["peer"] for r in rows}) == 2


def test_replay_to_without_answer_times_out_and_exits_1(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "a.hl7").write_text(a28("T-1", "T-1") + a28("T-2", "T-2"), newline="")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    accepted: list[socket.socket] = []

    def accept() -> None:  # accepts, reads, never answers
        silent.settimeout(15)
        try:
            while True:
                conn, _ = silent.accept()
                accepted.append(conn)
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = silent.getsockname()[1]
    try:
        started = time.monotonic()
        report = tmp_path / "r.json"
        result = cli(
            "replay", str(folder), "--to", f"127.0.0.1:{port}", "--timeout", "0.5",
            "--report", str(report),
        )  # fmt: skip
        assert result.exit_code == 1
        assert time.monotonic() - started < 20
        assert "ACK codes: none 1, not-sent 1" in result.stdout
        assert "#1 control_id=T-1 none no answer from" in result.stdout
        assert "#2 control_id=T-2 not-sent message #1 got no ACK" in result.stdout
        assert len(accepted) == 2  # the resend went over a new connection
    finally:
        silent.close()
        for conn in accepted:
            conn.close()


def test_replay_to_a_port_that_refuses_says_so_in_one_line_and_exits_2(tmp_path):
    folder = tmp_path / "set"
    make_set(folder, 100, 50)
    report = tmp_path / "r.json"
    refused_port = _free_port()
    for connections in ("1", "4"):
        refused = cli(
            "replay", str(folder), "--to", f"127.0.0.1:{refused_port}",
            "--connections", connections, "--report", str(report),
        )  # fmt: skip
        assert refused.exit_code == 2
        assert refused.stdout == ""  # no rate, no list of messages not sent
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith(f"Error: --to: cannot connect to 127.0.0.1:{refused_port}: ")
        assert line.endswith("; nothing sent")
        assert not report.exists()


def test_parallel_replay_keeps_each_patients_order_across_files(sqlite_url, tmp_path):
    """a.hl7 creates OLD and NEW, then (after other patients) updates OLD; b.hl7 merges OLD
    into NEW. Sent file by file on two connections, the merge went first and the update of
    OLD then hit a merged IPP (ERR 204); the merge must wait for the update."""
    folder = tmp_path / "set"
    folder.mkdir()
    others = "".join(a28(f"F-{n}", f"F{n}") for n in range(30))
    (folder / "a.hl7").write_text(
        a28("OLD", "OLD-1") + a28("NEW", "NEW-1", birth_name="AUTRE") + others
        + message("A31", Person(ipp="OLD", sex="M"), "OLD-2"),
        newline="",
    )  # fmt: skip
    (folder / "b.hl7").write_text(
        message("A40", Person(ipp="NEW", birth_name="AUTRE"), "MERGE", prior_ipp="OLD"),
        newline="",
    )
    serve = start_daemon(sqlite_url, tmp_path / "serve.log")
    port = serve.port
    try:
        result = cli("replay", str(folder), "--to", f"127.0.0.1:{port}", "--connections", "2")
    finally:
        assert serve.stop() == 0
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "ERR codes: -" in result.stdout
    logged = [r["control_id"] for r in log_rows(sqlite_url)]
    assert logged.index("OLD-2") < logged.index("MERGE")
    assert logged.index("NEW-1") < logged.index("MERGE")


def test_replayed_again_a_refused_message_is_reported_with_the_first_answers_errors(
    sqlite_url, tmp_path
):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "a.hl7").write_text(
        a28("OK-2", "OK-2") + a28("BAD-DATE", "BAD-DATE", birth_date="19790231"), newline=""
    )
    reports = []
    for run in (1, 2):
        report = tmp_path / f"r{run}.json"
        cli("replay", str(folder), "--local", "--db", sqlite_url, "--report", str(report))
        reports.append(json.loads(report.read_text()))
    first, again = reports
    assert again["duplicates"] == 2
    (refused,) = [m for m in again["not_aa"] if m["control_id"] == "BAD-DATE"]
    assert refused["ack_code"] == "AE"
    assert refused["errors"] == first["not_aa"][0]["errors"]
    assert refused["errors"][0].startswith("102 PID^1^7")
