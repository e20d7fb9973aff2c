"""The acknowledgement each MSH-15/MSH-16 combination asks for (HL7 table 0155), on one MLLP
connection to a real receiver: the application ACK once committed, the commit ACK, or none;
`[hl7] enhanced_ack` for the GAM that wants otherwise."""

from __future__ import annotations

import itertools
import socket

import pytest

from pamfr.hl7.samples import Person, message
from pamfr.transport.codec import encode_frame
from tests.helpers import log_rows, pamfr_server, parse_ack, start_daemon
from tests.mllp_harness import with_pid

CONDITIONS = ["", "AL", "NE", "ER", "SU"]
COMMIT = {"AA": "CA", "AE": "CE"}


def with_acks(text: str, accept: str, application: str) -> str:
    """The message with MSH-15 and MSH-16 set (MSH-13 and 14 stay empty)."""
    old = "|2.5^FRA^2.11|||||FRA|"
    assert old in text
    return text.replace(old, f"|2.5^FRA^2.11|||{accept}|{application}|FRA|", 1)


def expected(accept: str, application: str, code: str) -> str | None:
    """MSA-1 of the one answer, None for no answer: MSH-16 asking gives the application ACK,
    MSH-15 alone the commit ACK; both asking, the application ACK."""
    if (accept, application) == ("", ""):
        return code
    ok = code == "AA"
    asks = {"": False, "AL": True, "NE": False, "ER": not ok, "SU": ok}
    if asks[application]:
        return code
    return COMMIT[code] if asks[accept] else None


class Connection:
    """One MLLP connection, frames read one at a time (no answer is assumed)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buffer = b""

    def write(self, text: str) -> None:
        self.sock.sendall(encode_frame(text.encode()))

    def next_answer(self):
        while b"\x1c\r" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "the receiver closed the connection"
            self.buffer += chunk
        frame, _, self.buffer = self.buffer.partition(b"\x1c\r")
        return parse_ack(frame.lstrip(b"\x0b"))

    def close(self) -> None:
        self.sock.close()


def test_every_combination_on_one_connection(db_url):
    cases = []
    for n, (accept, application) in enumerate(itertools.product(CONDITIONS, CONDITIONS)):
        good = message("A28", Person(f"K{n}"), f"K{n}")
        refused = with_pid(message("A28", Person(f"R{n}"), f"R{n}"), f5="")  # AE 101: no name
        cases += [
            (with_acks(good, accept, application), f"K{n}", expected(accept, application, "AA"))
        ]
        cases += [
            (with_acks(refused, accept, application), f"R{n}", expected(accept, application, "AE"))
        ]
    assert {e for _, _, e in cases} == {"AA", "AE", "CA", "CE", None}
    with pamfr_server(db_url) as server:
        conn = Connection(server.port)
        try:
            for text, control_id, answer in cases:
                conn.write(text)
                if answer is not None:
                    ack = conn.next_answer()
                    assert (ack.control_id, ack.code) == (control_id, answer), text[:120]
            # Nothing was sent for the others: the next frame is the answer to this one.
            conn.write(message("A28", Person("PROBE"), "PROBE"))
            assert conn.next_answer().control_id == "PROBE"
        finally:
            conn.close()
    # Every message was committed and logged, answered or not.
    outcomes = dict(log_rows(db_url, "control_id", "outcome"))
    assert all(outcomes[c] == ("AA" if c.startswith("K") else "AE") for _, c, _ in cases)


@pytest.mark.parametrize(
    ("setting", "accept", "application", "answered"),
    [
        ("commit", "AL", "AL", "CA"),
        ("application", "AL", "AL", "AA"),
        ("original", "AL", "NE", "AA"),
        ("original", "NE", "NE", "AA"),
    ],
)
def test_the_hl7_setting_for_a_gam_that_wants_otherwise(
    sqlite_url, tmp_path, setting, accept, application, answered
):
    env = {"PAMFR_HL7_ENHANCED_ACK": setting, "PAMFR_RECEIVER_PARSE_WORKERS": "0"}
    daemon = start_daemon(sqlite_url, tmp_path / "serve.log", env=env)
    try:
        conn = Connection(daemon.port)
        try:
            conn.write(with_acks(message("A28", Person("S1"), "S1"), accept, application))
            ack = conn.next_answer()
            assert (ack.control_id, ack.code) == ("S1", answered)
        finally:
            conn.close()
    finally:
        assert daemon.stop() == 0
