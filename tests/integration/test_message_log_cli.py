"""`pamfr messages`: its filters, header, times with their offset and the raw message decoded
in its own character set, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import insert, update

from pamfr.cli import main
from pamfr.hl7.samples import Person, message
from pamfr.store.schema import message as message_table

AT = {  # received_at of the rows, by control id
    "C1": datetime(2026, 1, 10, 12, 0, tzinfo=UTC),
    "C2": datetime(2026, 1, 20, 12, 0, tzinfo=UTC),
    "C3": datetime(2026, 1, 30, 12, 0, tzinfo=UTC),
    "E1": datetime(2026, 1, 30, 13, 0, tzinfo=UTC),
    "W1": datetime(2026, 1, 30, 14, 0, tzinfo=UTC),
    "W0": datetime(2026, 1, 30, 15, 0, tzinfo=UTC),
}


def _row(control_id: str, outcome: str, err_codes: str | None, warnings: str | None) -> dict:
    """A log row as the receiver writes it (err_codes space separated, warnings as text)."""
    return {
        "received_at": AT[control_id],
        "door": "mllp",
        "peer": "10.1.2.3:40000",
        "sending_app": "GAM-URG",
        "sending_facility": "CHU-Y",
        "control_id": control_id,
        "message_type": "ADT",
        "event": "A28",
        "charset": "",
        "raw": b"MSH|^~\\&|GAM-URG|CHU-Y|||20260130||ADT^A28^ADT_A05|" + control_id.encode(),
        "raw_size": 60,
        "outcome": outcome,
        "error_text": "102 PID^1^3: bad" if outcome != "AA" else None,
        "err_codes": err_codes,
        "warnings": warnings,
    }


@pytest.fixture
def store(db_url, engine, receiver) -> str:
    menard = Person(ipp="P-1", birth_name="MÉNARD")
    raws = [
        message("A28", menard, "C1", charset="8859/1").encode("iso-8859-1"),
        message("A28", Person(ipp="P-2"), "C2").encode(),
        message("A31", Person(ipp="P-1", birth_name="MÉNARD", sex="M"), "C3").encode(),
    ]
    for raw in raws:
        assert receiver.handle(raw, "10.0.0.1:5000", "mllp").code == "AA"
    with engine.begin() as conn:
        for control_id in ("C1", "C2", "C3"):
            conn.execute(
                update(message_table)
                .where(message_table.c.control_id == control_id)
                .values(received_at=AT[control_id])
            )
        conn.execute(
            insert(message_table),
            [
                _row("E1", "AE", "102 205", None),
                _row("W1", "AA", None, "104 PID^1^32: unknown identity status kept as sent"),
                _row("W0", "AA", None, ""),
            ],
        )
    return db_url


def run(db_url: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["messages", "--db", db_url, *args])


def ids(db_url: str, *args: str) -> list[str]:
    result = run(db_url, "--json", *args)
    assert result.exit_code == 0, result.output
    return [m["control_id"] for m in json.loads(result.stdout)]


def test_filters(store):
    assert ids(store) == ["W0", "W1", "E1", "C3", "C2", "C1"]
    assert ids(store, "--limit", "2") == ["W0", "W1"]
    assert ids(store, "--control-id", "C2") == ["C2"]
    assert ids(store, "--sender", "GAM") == ["C3", "C2", "C1"]
    assert ids(store, "--sender", "GAM-URG|CHU-Y") == ["W0", "W1", "E1"]
    assert ids(store, "--sender", "GAM-URG|CHU-X") == []
    # history rows: the A28 and the A31 of P-1, not P-2's
    assert ids(store, "--ipp", "P-1") == ["C3", "C1"]
    assert ids(store, "--err-code", "205") == ["E1"]
    assert ids(store, "--err-code", "102") == ["E1"]
    assert ids(store, "--err-code", "20") == []  # a whole code, not a prefix
    assert ids(store, "--warnings") == ["W1"]
    assert ids(store, "--outcome", "AE") == ["E1"]
    # an offset given is honoured: 13:00+01:00 is 12:00 UTC, C2 is received then
    assert ids(store, "--since", "2026-01-20T13:00+01:00", "--until", "2026-01-25") == ["C2"]
    assert ids(store, "--since", "2026-01-20T12:00:01Z") == ["W0", "W1", "E1", "C3"]
    # dates: local midnight; --until takes the whole day
    assert ids(store, "--until", "2026-01-15") == ["C1"]
    assert ids(store, "--since", "2026-01-15", "--until", "2026-01-25") == ["C2"]


def test_text_has_a_header_and_times_with_their_offset(store):
    result = run(store, "--control-id", "E1")
    assert result.exit_code == 0, result.output
    header, line = result.stdout.splitlines()
    assert header.split()[:3] == ["ID", "RECEIVED", "DOOR"]
    assert "2026-01-30T13:00:00+00:00" in line
    assert "GAM-URG|CHU-Y E1 A28 AE ERR 102,205" in line


def test_show_content_decodes_by_the_messages_own_charset(store):
    result = run(store, "--control-id", "C1", "--show-content", "--json")
    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)
    assert item["charset"] == "8859/1"
    assert "MÉNARD" in item["raw"] and "\ufffd" not in item["raw"]
    text = run(store, "--control-id", "C1", "--show-content").stdout
    assert "PID|" in text and "MÉNARD" in text


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--limit", "-1"], "--limit"),
        (["--limit", "0"], "--limit"),
        (["--since", "yesterday"], "--since"),
        (["--until", "30/01/2026"], "--until"),
        (["--err-code", "AE"], "--err-code"),
        (["--sender", "GAM|CHU|X"], "--sender"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(sqlite_url, args, named):
    result = run(sqlite_url, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert named in result.stderr and "Traceback" not in result.stderr
