"""Receiving over real sockets, against SQLite and PostgreSQL: ACKs, bad input,
duplicates, order per connection, the message log."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from pamfr.hl7.samples import Person, message
from pamfr.store.schema import message as message_table
from pamfr.store.schema import patient
from pamfr.transport.client import MLLPClient
from pamfr.transport.codec import encode_frame
from tests.helpers import pamfr_server, parse_ack, send


def a28(n: int, control_id: str | None = None, charset: str = "UNICODE UTF-8", **kw) -> str:
    return message("A28", Person(ipp=f"IPP{n}", **kw), control_id or f"C{n}", charset=charset)


def logged(engine) -> list[dict]:
    with engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(select(message_table).order_by(message_table.c.id)).mappings()
        ]


def test_ack_shape_original_mode(db_url, engine):
    with pamfr_server(db_url) as server:
        (ack,) = send(server.port, [a28(1, "CTRL-1")])
    assert ack.code == "AA"
    assert ack.control_id == "CTRL-1"
    # Sender and receiver swapped, ACK^<event>^ACK, a fresh control id, version and charset echoed.
    assert ack.msh[2:6] == ["DPI", "CHU-X", "GAM", "CHU-X"]
    assert ack.msh[8] == "ACK^A28^ACK"
    assert ack.msh[9] and ack.msh[9] != "CTRL-1"
    assert ack.msh[11] == "2.5^FRA^2.11"
    assert ack.msh[17] == "UNICODE UTF-8"
    rows = logged(engine)
    assert [(r["control_id"], r["outcome"], r["event"], r["door"]) for r in rows] == [
        ("CTRL-1", "AA", "A28", "mllp")
    ]
    assert rows[0]["ack"] == ack.raw
    assert rows[0]["raw"].startswith(b"MSH|")


def test_enhanced_mode_commit_ack(db_url):
    msg = a28(2).replace("|T|2.5^FRA^2.11|||", "|T|2.5^FRA^2.11|||AL|NE|")
    with pamfr_server(db_url) as server:
        (ack,) = send(server.port, [msg])
    assert ack.code == "CA"


def test_unknown_type_event_version_processing_id(db_url, engine):
    base = a28(3)
    cases = {
        "type": (base.replace("ADT^A28^ADT_A05", "ORU^R01^ORU_R01"), "200", "MSH^1^9^1^1"),
        "event": (base.replace("ADT^A28^ADT_A05", "ADT^A99^ADT_A01"), "201", "MSH^1^9^1^2"),
        "version": (base.replace("|2.5^FRA^2.11|", "|3.0|"), "203", "MSH^1^12"),
        "processing": (base.replace("|T|2.5", "|X|2.5"), "202", "MSH^1^11"),
    }
    with pamfr_server(db_url) as server:
        acks = send(server.port, [m for m, _, _ in cases.values()])
    for ack, (_, code, location) in zip(acks, cases.values(), strict=True):
        assert ack.code == "AR"
        assert ack.err_codes == [code]
        assert ack.err_locations == [location]
        assert ack.errs[0][4] == "E"
        assert ack.errs[0][8]  # a human-readable text
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(patient)).scalar() == 0
    assert [r["outcome"] for r in logged(engine)] == ["AR"] * 4


def test_not_hl7_gets_ar_100_and_connection_stays_usable(db_url, engine):
    async def scenario(port):
        async with await MLLPClient.connect("127.0.0.1", port) as client:
            first = await client.send(b"hello, this is not HL7")
            second = await client.send(a28(4).encode())
        return parse_ack(first), parse_ack(second)

    with pamfr_server(db_url) as server:
        bad, good = asyncio.run(scenario(server.port))
    assert (bad.code, bad.control_id, bad.err_codes) == ("AR", "", ["100"])
    assert good.code == "AA"
    rows = logged(engine)
    assert rows[0]["raw"] == b"hello, this is not HL7"
    assert rows[0]["outcome"] == "AR"


def test_charsets(db_url, engine):
    latin1 = a28(5, used_name="Lefèvre", charset="8859/1").encode("iso-8859-1")
    latin9 = a28(6, used_name="Œuvre", charset="8859/15").encode("iso-8859-15")
    utf8 = a28(7, used_name="Hélène").encode("utf-8")
    ascii_ = a28(8, charset="").encode("ascii")
    wrong = a28(9, used_name="Noël").encode("iso-8859-1")  # declared UTF-8, bytes Latin-1
    unknown = a28(10, charset="KLINGON").encode("ascii")
    with pamfr_server(db_url) as server:
        acks = send(server.port, [latin1, latin9, utf8, ascii_, wrong, unknown])
    assert [a.code for a in acks] == ["AA", "AA", "AA", "AA", "AE", "AE"]
    assert acks[4].err_codes == ["103"] and acks[4].err_locations == ["MSH^1^18"]
    assert acks[5].err_codes == ["103"]
    with engine.connect() as conn:
        names = dict(conn.execute(select(patient.c.id, patient.c.used_name)).all())
    assert sorted(n for n in names.values() if n) == ["Hélène", "Lefèvre", "Œuvre"]
    rows = logged(engine)
    assert rows[4]["raw"] == wrong  # kept byte for byte


def test_segment_separators_cr_lf_crlf(db_url, engine):
    msgs = [
        a28(11).replace("\r", "\n"),
        a28(12).replace("\r", "\r\n"),
        a28(13),
    ]
    with pamfr_server(db_url) as server:
        acks = send(server.port, [m.encode() for m in msgs])
    assert [a.code for a in acks] == ["AA", "AA", "AA"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(patient)).scalar() == 3


def test_duplicate_control_id_answered_with_stored_ack(db_url, engine):
    first = a28(20, "DUP-1")
    resent = first.replace("\r", "\n")  # the same message through another door's separators
    with pamfr_server(db_url) as server:
        acks = send(server.port, [first, first, resent])
    assert [a.code for a in acks] == ["AA"] * 3
    assert acks[1].raw == acks[0].raw and acks[2].raw == acks[0].raw
    rows = logged(engine)
    assert [r["duplicate_of"] for r in rows] == [None, rows[0]["id"], rows[0]["id"]]


def test_reused_control_id_with_other_content_is_refused_and_kept(db_url, engine, caplog):
    """A GAM whose counter restarted: the second message must not get the first one's AA and
    be silently dropped."""
    first = a28(20, "DUP-1")
    changed = a28(20, "DUP-1", birth_name="OTHER")
    with pamfr_server(db_url) as server:
        acks = send(server.port, [first, changed, changed])
    assert [a.code for a in acks] == ["AA", "AE", "AE"]
    assert (acks[1].err_codes, acks[1].err_locations) == (["205"], ["MSH^1^10"])
    assert "already used" in acks[1].errs[0][8]
    with engine.connect() as conn:
        assert conn.execute(select(patient.c.birth_name)).scalars().all() == ["PAT-TEST"]
    rows = logged(engine)
    assert [r["outcome"] for r in rows] == ["AA", "AE", "AE"]
    assert rows[1]["raw"] == changed.encode() and rows[1]["duplicate_of"] is None
    assert [r["dedup_key"] is None for r in rows] == [False, True, True]
    assert "already used by message" in caplog.text and "OTHER" not in caplog.text


def test_reused_control_id_may_be_applied_by_choice(db_url, engine):
    first = a28(20, "DUP-1")
    changed = a28(20, "DUP-1", birth_name="OTHER")
    with pamfr_server(db_url, reused_control_id="apply") as server:
        acks = send(server.port, [first, changed])
    assert [a.code for a in acks] == ["AA", "AA"]
    assert (acks[1].err_codes, acks[1].errs[0][4]) == (["205"], "W")
    with engine.connect() as conn:
        assert conn.execute(select(patient.c.birth_name)).scalars().all() == ["OTHER"]


def test_rejected_ar_is_not_remembered_as_processed(db_url):
    bad = a28(21, "RETRY-1").replace("ADT^A28^ADT_A05", "ADT^A99^ADT_A01")
    with pamfr_server(db_url) as server:
        acks = send(server.port, [bad, a28(21, "RETRY-1")])
    # An AR invites a resend: the corrected message with the same control id is applied.
    assert [a.code for a in acks] == ["AR", "AA"]


def test_oversized_frame_ar_and_stream_in_sync(db_url, engine):
    from pamfr.transport.server import ServerLimits

    big = a28(30, "BIG-1").replace("PV1||N", "PV1||N|" + "X" * 5000)

    async def scenario(port):
        async with await MLLPClient.connect("127.0.0.1", port) as client:
            one = await client.send(big.encode())
            two = await client.send(a28(31, "SMALL-1").encode())
        return parse_ack(one), parse_ack(two)

    with pamfr_server(db_url, ServerLimits(max_frame_size=4096)) as server:
        one, two = asyncio.run(scenario(server.port))
    assert (one.code, one.control_id, one.err_codes) == ("AR", "BIG-1", ["100"])
    assert (two.code, two.control_id) == ("AA", "SMALL-1")
    rows = logged(engine)
    assert rows[0]["raw_size"] > 4096 and rows[0]["outcome"] == "AR"
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(patient)).scalar() == 1


def test_order_per_connection_and_concurrent_connections(db_url, engine):
    """Updates of one patient over one connection land in order; 20 senders in parallel."""

    async def sender(port, k):
        async with await MLLPClient.connect("127.0.0.1", port) as client:
            codes = []
            for i in range(5):
                person = Person(ipp=f"ORD{k}", birth_name=f"NAME{i}")
                event = "A28" if i == 0 else "A31"
                ack = await client.send(message(event, person, f"ORD{k}-{i}").encode())
                codes.append(parse_ack(ack).code)
            return codes

    async def scenario(port):
        return await asyncio.gather(*(sender(port, k) for k in range(20)))

    with pamfr_server(db_url) as server:
        results = asyncio.run(scenario(server.port))
    assert all(codes == ["AA"] * 5 for codes in results)
    with engine.connect() as conn:
        names = set(conn.execute(select(patient.c.birth_name)).scalars())
    assert names == {"NAME4"}  # every patient ends with its last update


def test_raw_frame_with_junk_and_split_writes(db_url):
    """Junk before the start block and a frame cut in pieces still get one ACK."""

    async def scenario(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        frame = encode_frame(a28(40, "SPLIT-1").encode())
        writer.write(b"junk\r\n")
        for i in range(0, len(frame), 7):
            writer.write(frame[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0)
        data = await asyncio.wait_for(reader.readuntil(b"\x1c\r"), 10)
        writer.close()
        return parse_ack(data[1:-2])

    with pamfr_server(db_url) as server:
        ack = asyncio.run(scenario(server.port))
    assert (ack.code, ack.control_id) == ("AA", "SPLIT-1")
