"""The MLLP door against one peer holding many silent sockets, and against an open listen
address nobody restricted (a real `pamfr serve`, real sockets on the loopback)."""

from __future__ import annotations

import socket

from pamfr.hl7.samples import Person, message
from tests.helpers import parse_ack, run_cli, start_daemon

SILENT = 1000


def _send_from(source: str, port: int, payload: bytes) -> bytes:
    """One framed message from `source` (another loopback address), its ACK's payload."""
    with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0)) as s:
        s.sendall(b"\x0b" + payload + b"\x1c\r")
        answer = b""
        while not answer.endswith(b"\x1c\r"):
            chunk = s.recv(65536)
            assert chunk, "closed without an answer"
            answer += chunk
    return answer[1:-2]


def test_one_peer_s_silent_sockets_are_capped_and_another_peer_is_answered(sqlite_url, tmp_path):
    daemon = start_daemon(
        sqlite_url,
        tmp_path / "serve.log",
        env={"PAMFR_RECEIVER_PARSE_WORKERS": "0", "PAMFR_SERVER_MAX_CONNECTIONS_PER_PEER": "8"},
    )
    silent: list[socket.socket] = []
    try:
        for _ in range(SILENT):
            silent.append(socket.create_connection(("127.0.0.1", daemon.port), timeout=30))
        # The GAM at another address still gets its answer while those are open.
        ack = parse_ack(
            _send_from("127.0.0.2", daemon.port, message("A28", Person("CAP1"), "CAP1").encode())
        )
        assert ack.code == "AA"
        closed = 0
        for s in silent:  # all but 8 were closed at once by the daemon
            s.settimeout(0.5)
            try:
                closed += s.recv(1) == b""
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass  # still held open by the daemon
        assert closed == SILENT - 8
    finally:
        for s in silent:
            s.close()
        assert daemon.stop() == 0
    log = daemon.log()
    assert log.count("connections open from that address (max 8)") == SILENT - 8


def test_a_silent_socket_is_closed_at_the_first_frame_deadline(sqlite_url, tmp_path):
    daemon = start_daemon(
        sqlite_url,
        tmp_path / "serve.log",
        env={"PAMFR_RECEIVER_PARSE_WORKERS": "0", "PAMFR_SERVER_FIRST_FRAME_TIMEOUT": "0.5"},
    )
    try:
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as s:
            assert s.recv(1) == b""  # closed by the daemon, well before the 300 s idle time-out
        # a GAM that sends at once is served as before
        ack = parse_ack(
            _send_from("127.0.0.1", daemon.port, message("A28", Person("FF1"), "FF1").encode())
        )
        assert ack.code == "AA"
    finally:
        assert daemon.stop() == 0
    assert "no message within 0.5s of connecting; closing" in daemon.log()


def test_an_open_listen_address_needs_an_allow_list_or_client_certificates(sqlite_url):
    done = run_cli(
        "serve", "--host", "0.0.0.0", "--port", "0", "--db", sqlite_url, env={"PAMFR_CONFIG": ""}
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        "cannot start: server.host 0.0.0.0 is not the loopback: say who may send, with "
        "server.allowed_peers or client certificates (server.tls_client_ca), or "
        "server.allow_any_peer = true on purpose"
    ) in done.stderr


def test_a_reload_that_empties_the_allow_list_of_an_open_listener_is_refused(caplog):
    from pamfr.service.reload import Reloader
    from pamfr.settings.config import ServerSettings, Settings
    from pamfr.transport.access import PeerFilter
    from pamfr.transport.server import MLLPServer

    running = Settings.model_construct(
        server=ServerSettings(host="0.0.0.0", allowed_peers=["10.1.2.0/24"])
    )
    server = MLLPServer(handler=None, host="0.0.0.0", peer_filter=PeerFilter.parse(["10.1.2.0/24"]))
    emptied = Settings.model_construct(server=ServerSettings(host="0.0.0.0", allowed_peers=[]))
    reloader = Reloader(lambda: emptied, running, server, receiver=None)
    assert reloader.reload() is False
    assert server.peer_filter == PeerFilter.parse(["10.1.2.0/24"])  # still the allow-list
    assert "configuration not reloaded, the running one is kept: server.host 0.0.0.0" in caplog.text
    narrowed = Settings.model_construct(
        server=ServerSettings(host="0.0.0.0", allowed_peers=["10.1.2.7"])
    )
    assert Reloader(lambda: narrowed, running, server, receiver=None).reload() is True
    assert server.peer_filter == PeerFilter.parse(["10.1.2.7"])
