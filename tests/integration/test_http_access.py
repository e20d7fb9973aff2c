"""Who gets through the HTTP port of a real `pamfr serve`: the Host check (DNS rebinding),
deny by default without a token, the anonymous loopback set on purpose, the refusals at start,
and the bounds on slow or numerous clients (real sockets on 127.0.0.1)."""

from __future__ import annotations

import json
import re
import socket

from pamfr.hl7.samples import Person, message
from tests.helpers import TEST_TOKEN, Daemon, run_cli, send, start_daemon

ENV = {"PAMFR_RECEIVER_PARSE_WORKERS": "1", "PAMFR_HTTP_FHIR": "true"}


def http_port(daemon: Daemon) -> int:
    found = re.search(r"HTTP port on [^ ]+:(\d+)", daemon.log())
    assert found, daemon.log()
    return int(found.group(1))


def request(port: int, path: str, host: str, token: str | None = TEST_TOKEN) -> tuple[int, str]:
    """One GET with exactly this Host header, over a plain socket."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode("utf-8", "replace")


def fed_daemon(db_url: str, tmp_path, **env: str) -> tuple[Daemon, int]:
    daemon = start_daemon(db_url, tmp_path / "serve.log", "--http", "127.0.0.1:0", env=ENV | env)
    acks = send(daemon.port, [message("A28", Person("HOST1", birth_name="HOSTNAME"), "H1")])
    assert acks[0].code == "AA"
    return daemon, http_port(daemon)


def test_a_foreign_host_header_gets_400_and_no_data(db_url, tmp_path):
    public = {"PAMFR_HTTP_PUBLIC_URL": "https://pamfr.chu-x.example:8443/api"}
    daemon, port = fed_daemon(db_url, tmp_path, **public)
    try:
        path = "/fhir/Patient?identifier=HOST1"
        for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.2", "pamfr"):
            status, body = request(port, path, host)
            assert status == 400 and "HOSTNAME" not in body and "HOST1" not in body, host
        assert request(port, "/metrics", "attacker.example", None)[0] == 400
        for host in (f"127.0.0.1:{port}", "localhost", f"[::1]:{port}", "pamfr.chu-x.example"):
            status, body = request(port, path, host)
            assert status == 200 and json.loads(body)["total"] == 1, host
    finally:
        assert daemon.stop() == 0


def test_data_routes_need_a_token_even_on_the_loopback(db_url, tmp_path):
    daemon, port = fed_daemon(db_url, tmp_path, PAMFR_HTTP_TOKENS="{}")
    host = f"127.0.0.1:{port}"
    try:
        for path in ("/fhir/Patient?identifier=HOST1", "/events?after=0", "/fhir/Patient/1"):
            status, body = request(port, path, host, token=None)
            assert status == 401 and "HOSTNAME" not in body, path
            assert request(port, path, host, token="a-guess-0123456789abcdef")[0] == 401
        for path in ("/healthz", "/readyz", "/metrics", "/fhir/metadata"):
            assert request(port, path, host, token=None)[0] == 200, path
        assert request(port, "/anything-new", host, token=None)[0] == 401
    finally:
        assert daemon.stop() == 0
    assert "WARNING" in daemon.log() and "no http.tokens: every route but /healthz" in daemon.log()


def test_anonymous_loopback_is_opened_on_purpose_and_said(db_url, tmp_path):
    daemon, port = fed_daemon(
        db_url, tmp_path, PAMFR_HTTP_TOKENS="{}", PAMFR_HTTP_ANONYMOUS_LOOPBACK="true"
    )
    host = f"127.0.0.1:{port}"
    try:
        status, body = request(port, "/fhir/Patient?identifier=HOST1", host, token=None)
        assert status == 200 and json.loads(body)["total"] == 1
        assert request(port, "/events?after=0", host, token=None)[0] == 200
        # a wrong token is still refused: anonymous means no Authorization header at all
        assert request(port, "/events?after=0", host, token="a-guess-0123456789abcdef")[0] == 401
    finally:
        assert daemon.stop() == 0
    assert "http.anonymous_loopback = true: /fhir and /events answer every process" in (
        daemon.log()
    )


def test_unsafe_http_set_ups_are_refused_in_one_line(sqlite_url):
    cases = [
        (
            {"PAMFR_HTTP_ANONYMOUS_LOOPBACK": "true", "PAMFR_HTTP_LISTEN": "0.0.0.0:0"},
            "http.anonymous_loopback is for a loopback listen address, not 0.0.0.0",
        ),
        (
            {"PAMFR_HTTP_LISTEN": "0.0.0.0:0"},
            "http.listen 0.0.0.0 is not the loopback: /readyz and /metrics off this host need "
            "TLS (http.tls_cert and http.tls_key), or http.health_without_tls = true on purpose",
        ),
        (
            {"PAMFR_HTTP_LISTEN": "127.0.0.1:0", "PAMFR_HTTP_PUBLIC_URL": "pamfr.example"},
            "http.public_url: expected http(s)://host[:port][/prefix], got 'pamfr.example'",
        ),
    ]
    for env, says in cases:
        done = run_cli("serve", "--port", "0", "--db", sqlite_url, env={"PAMFR_CONFIG": "", **env})
        assert done.returncode == 2, done.stderr
        assert says in done.stderr and "Traceback" not in done.stderr


def test_half_sent_requests_are_closed_and_the_port_still_answers(sqlite_url, tmp_path):
    daemon, port = fed_daemon(sqlite_url, tmp_path, PAMFR_HTTP_HEADER_TIMEOUT="1")
    slow = []
    try:
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            slow.append(s)
        for s in slow:  # each one is closed by the server: recv sees the end, not a timeout
            assert s.recv(1024) == b""
        status, _ = request(port, "/healthz", f"127.0.0.1:{port}")
        assert status == 200
        # the same deadline applies to a kept-alive connection's next request
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            first = s.recv(65536)
            assert first.startswith(b"HTTP/1.1 200")
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
            rest = b""
            while chunk := s.recv(65536):
                rest += chunk
            assert b"HTTP/1.1" not in rest
    finally:
        for s in slow:
            s.close()
        assert daemon.stop() == 0
