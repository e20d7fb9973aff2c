"""At INFO, the daemon's log holds no patient data (names, birth dates, INS).

A full session at the default level: creations, updates, a merge, a duplicate, messages
refused for every kind of reason (bad INS key, bad date, unknown event, unreadable frame,
oversized frame, sender not allowed) over MLLP and through a dropped file. Then the log is
searched for every name, birth date (HL7, ISO and French forms) and INS of the test patients.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import replace

from sqlalchemy import select

from pamfr.hl7.samples import Person, message, nir_with_key
from pamfr.store.schema import message as message_table
from tests.helpers import parse_ack, start_daemon
from tests.reliability.common import connect

# Made-up names that cannot occur in a log line by chance.
ALICE = Person(
    ipp="HYG001",
    birth_name="ZORGLUBIAN",
    given_names=("PERCEVALINE", "ONESIPHORA"),
    birth_date="19610417",
    sex="F",
    insee="63220",
    ins=nir_with_key("2610463220123"),
)
BRUNO = Person(
    ipp="HYG002",
    birth_name="QUIMPERLAY",
    given_names=("ANSELMIN",),
    birth_date="19830912",
    sex="M",
    insee="29233",
    ins=nir_with_key("1830929233045"),
)
CLARA = Person(  # her INS key is wrong: AE
    ipp="HYG003",
    birth_name="VERCINGETORIXA",
    given_names=("BRUNEHAUTE",),
    birth_date="19700101",
    ins="270017511204599",
)
DENIS = Person(  # arrives by the file drop
    ipp="HYG004",
    birth_name="BROCELIANDRO",
    given_names=("TALIESINE",),
    birth_date="19950630",
    sex="M",
    ins=nir_with_key("1950675056789"),
)
ALICE_MARRIED = replace(ALICE, used_name="MARQUESSACQ", used_given_name="ISAURETTE")


def _needles(people: list[Person]) -> set[str]:
    found: set[str] = set()
    for p in people:
        found |= {p.birth_name, *p.given_names}
        found |= {n for n in (p.used_name, p.used_given_name) if n}
        d = p.birth_date
        found |= {d, f"{d[:4]}-{d[4:6]}-{d[6:]}", f"{d[6:]}/{d[4:6]}/{d[:4]}"}
        if p.ins:
            found |= {p.ins, p.ins[:13]}
    return found


def _mllp_session() -> list[bytes]:
    a28 = message("A28", ALICE, "HYG-1").encode()
    bad_date = message("A28", replace(BRUNO, birth_date="1983-09-12"), "HYG-6").encode()
    unknown_event = message("A28", BRUNO, "HYG-7").replace("ADT^A28^", "ADT^A99^").encode()
    foreign = message("A28", BRUNO, "HYG-8").replace("|GAM|CHU-X|", "|INTRUS|AILLEURS|").encode()
    no_msh = message("A28", BRUNO, "HYG-9").split("\r", 1)[1].encode()  # no MSH: unreadable
    huge = message("A28", BRUNO, "HYG-10").replace("PV1||N", "PV1||N|" + "X" * 8000).encode()
    return [
        a28,
        message("A31", ALICE_MARRIED, "HYG-2").encode(),
        message("A28", BRUNO, "HYG-3").encode(),
        message("A40", ALICE_MARRIED, "HYG-4", prior_ipp=BRUNO.ipp).encode(),
        message("A28", CLARA, "HYG-5").encode(),
        bad_date,
        unknown_event,
        foreign,
        no_msh,
        huge,
        a28,  # a resend: duplicate
        "MSH|^~\\&|GAM|CHU-X|DPI|CHU-X|2024||ADT^A28^ADT_A05|HYG-11|P|2.5|||||FRA|"
        "8859/1\rPID|1||HYG005^^^CHU-X^PI||ÉLISABÉTHINE^ZÉNOBIE||19480229|F\r".encode("latin-1"),
    ]


def test_no_patient_data_in_the_log_at_info(sqlite_url, engine, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = tmp_path / "pamfr.toml"
    config.write_text(
        "[server]\n"
        "max_frame_size = 4096\n"
        'allowed_senders = ["GAM|CHU-X"]\n'
        "[filedrop]\n"
        f'dirs = ["{inbox}"]\n'
        "quiet_period = 0.2\n"
        "poll_interval = 0.1\n"
        "[log]\n"
        'level = "info"\n'
    )
    daemon = start_daemon(sqlite_url, tmp_path / "serve.log", config=config)
    dropped = message("A28", DENIS, "HYG-F1") + message("A28", CLARA, "HYG-F2")

    async def scenario() -> list[str]:
        async with await connect(daemon.port) as client:
            codes = [parse_ack(await client.send(m, timeout=20)).code for m in _mllp_session()]
        (inbox / "feed.hl7.part").write_text(dropped)
        (inbox / "feed.hl7.part").rename(inbox / "feed.hl7")
        deadline = time.monotonic() + 30
        while not (inbox / "error" / "feed.hl7").exists():
            assert time.monotonic() < deadline, "the dropped file was not processed"
            await asyncio.sleep(0.1)
        return codes

    try:
        codes = asyncio.run(asyncio.wait_for(scenario(), 60))
        daemon.signal(signal.SIGTERM)
        assert daemon.proc.wait(30) == 0
    finally:
        daemon.kill_group()
    assert codes == ["AA", "AA", "AA", "AA", "AE", "AE", "AR", "AR", "AR", "AR", "AA", "AA"]

    needles = _needles([ALICE_MARRIED, BRUNO, CLARA, DENIS]) | {"ÉLISABÉTHINE", "19480229"}
    # The needles are what was really sent: each is in the message log, as it should be...
    with engine.connect() as conn:
        raws = b"\n".join(conn.execute(select(message_table.c.raw)).scalars())
    engine.dispose()
    stored = raws.decode("utf-8", errors="replace") + raws.decode("latin-1")
    iso_or_fr = {n for n in needles if "-" in n or "/" in n}
    assert {n for n in needles - iso_or_fr if n not in stored} == set()
    # ... and none is in the daemon's log.
    log = daemon.log()
    assert "control_id=HYG-5 event=A28 outcome=AE" in log  # the log does tell what happened
    assert "file 'feed.hl7': 2 message(s)" in log
    leaked = sorted(n for n in needles if n.lower() in log.lower())
    assert leaked == [], f"patient data in the INFO log: {leaked}"
