"""The public PAM FR examples (tests/corpus/public) sent with `pamfr send` to a real server:
each gets its ACK and its log row, and the store holds the status and INS their content implies."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner
from sqlalchemy import select

from pamfr.cli import main
from pamfr.store.schema import message as message_table
from tests.conftest import PUBLIC_CORPUS
from tests.helpers import pamfr_server, run_cli

FILES = sorted(p for p in PUBLIC_CORPUS.glob("*.hl7") if not p.name.startswith("009-"))
ANS_TEST_INS = "279035121518989"


def as_sent(path) -> bytes:
    """The message as `pamfr send` puts it on the wire: CR-separated, without trailing lines."""
    return b"\r".join(s for s in re.split(rb"\r\n|\r|\n", path.read_bytes()) if s.strip())


def test_public_examples_through_pamfr_send(db_url, engine):
    assert [f.name[:3] for f in FILES] == [f"{n:03d}" for n in range(1, 9)]
    with pamfr_server(db_url) as server:
        result = run_cli("send", *map(str, FILES), "--to", f"127.0.0.1:{server.port}")
    lines = re.findall(r"^(\S+) #1: (\S+)((?:\n    ERR .*)*)", result.stdout, re.M)
    codes = {name.rsplit("/", 1)[-1][:3]: (code, errs.strip()) for name, code, errs in lines}
    assert set(codes) == {f.name[:3] for f in FILES}, result.stdout + result.stderr
    # 003 reuses 001's MSH-10 (3975) for another message: refused, AE 205 at MSH-10.
    assert {k: c for k, (c, _) in codes.items()} == {
        **{f"{n:03d}": "AA" for n in range(1, 9)},
        "003": "AE",
    }
    assert codes["003"][1].startswith("ERR 205 MSH^1^10 ")
    # 004-007 are encounter events of a known patient: its identity is not rewritten (W).
    for n in range(4, 8):
        assert codes[f"{n:03d}"][1].startswith("ERR 0 PID^1 "), codes
    # 008 is PROV~FICT with an INS whose key does not verify (170017510112313): integrated
    # without the INS, with warnings saying why; it declares 8859/15 and is UTF-8 (read so).
    assert codes["008"][1].startswith("ERR 103 MSH^1^18 "), codes["008"]
    assert "UTF-8" in codes["008"][1].splitlines()[0]
    assert "ERR 102 PID^1^3 " in codes["008"][1]
    assert "ERR 103 PID^1^32 " in codes["008"][1]
    assert result.returncode == 1  # not every ACK is AA

    def show(*selector: str):
        return CliRunner().invoke(main, ["patient", "show", *selector, "--db", db_url, "--json"])

    with engine.connect() as conn:
        rows = conn.execute(select(message_table).order_by(message_table.c.id)).mappings().all()
    engine.dispose()
    assert [r["raw"] for r in rows] == [as_sent(f) for f in FILES]
    assert [r["outcome"] for r in rows] == ["AA", "AA", "AE"] + ["AA"] * 5
    assert rows[2]["duplicate_of"] is None and rows[2]["error_text"].startswith("205 MSH^1^10")
    assert rows[7]["warnings"].startswith("103 MSH^1^18") and "102 PID^1^3" in rows[7]["warnings"]

    view = json.loads(show("--ipp", "000003", "--authority", "000897406").stdout)
    assert view["ins"] == {"value": ANS_TEST_INS, "oid": "1.2.250.1.213.1.4.10", "kind": "NIR-TEST"}
    assert (view["status"], view["ins_usable"], view["attributes"]) == ("qualifiee", True, [])
    assert view["active"] is True
    assert (view["birth_name"], view["first_given_name"], view["birth_given_names"]) == (
        "PAT-TROIS",
        "DOMINIQUE",
        ["DOMINIQUE"],
    )
    assert (view["birth_date"], view["sex"], view["birth_place_insee"]) == (
        "1979-03-28",
        "F",
        "63220",
    )
    assert view["identity_mode"] is None  # ZFD-5 of 004-007 is not applied by an A01
    assert [(i["value"], i["type"]) for i in view["identifiers"]] == [
        ("000003", "PI"),
        (ANS_TEST_INS, "INS"),
    ]
    # 008 was applied without its INS: provisoire, fictive.
    fictive = json.loads(show("--ipp", "123456789").stdout)
    assert (fictive["status"], fictive["attributes"], fictive["ins"]) == (
        "provisoire",
        ["fictive"],
        None,
    )
    assert fictive["used_name"] == "Lastname"
