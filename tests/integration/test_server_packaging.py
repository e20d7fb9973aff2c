"""Running pamfr on a server: systemd readiness (sd_notify), JSON logs, the unit file, the
container image and its compose file."""

from __future__ import annotations

import configparser
import json
import os
import re
import socket
import subprocess
import time
import uuid

import pytest

from pamfr.hl7.samples import Person, message
from tests.conftest import PUBLIC_CORPUS, REPO
from tests.helpers import run_cli, send, start_daemon

SECRET = Person(
    ipp="JSON-1",
    birth_name="ZORGLUBESCU",
    given_names=("PERPETUE",),
    birth_date="19610713",
    ins="261077512345678",
)


def test_serve_json_logs_one_object_a_line_without_patient_data(sqlite_url, tmp_path):
    daemon = start_daemon(sqlite_url, tmp_path / "serve.log", "--log-format", "json")
    try:
        acks = send(daemon.port, [message("A28", SECRET, "JSON-CTL-1")])
    finally:
        assert daemon.stop() == 0
    assert acks[0].code in ("AA", "AE")
    text = daemon.log()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # all JSON
    per_message = [item for item in lines if item.get("control_id") == "JSON-CTL-1"]
    assert len(per_message) == 1
    item = per_message[0]
    assert (item["door"], item["event"], item["outcome"]) == ("mllp", "A28", acks[0].code)
    assert item["peer"].startswith("127.0.0.1:") and item["duplicate"] is False
    assert item["level"] == "INFO" and "control_id=JSON-CTL-1" in item["message"]
    assert isinstance(item["duration_ms"], float)
    for secret in ("ZORGLUBESCU", "PERPETUE", "19610713", "1961-07-13", "261077512345678"):
        assert secret not in text


def test_watch_json_logs_one_object_a_line_for_the_file_door(sqlite_url, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    person = Person(
        ipp="JSON-2", birth_name="ZORGLUBESCU", given_names=("PERPETUE",), birth_date="19610713"
    )
    (inbox / "a.hl7").write_text(message("A28", person, "JSON-FILE-1"), encoding="utf-8")
    result = run_cli(
        "watch",
        str(inbox),
        "--once",
        "--db",
        sqlite_url,
        "--quiet-period",
        "0",
        env={"PAMFR_LOG_FORMAT": "json"},
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    per_message = [item for item in lines if item.get("control_id") == "JSON-FILE-1"]
    assert len(per_message) == 1
    item = per_message[0]
    assert (item["door"], item["event"], item["outcome"]) == ("file", "A28", "AA")
    for secret in ("ZORGLUBESCU", "PERPETUE", "19610713"):
        assert secret not in result.stderr


def test_sd_notify_ready_once_listening_and_stopping(sqlite_url, tmp_path):
    path = f"/tmp/pamfr-notify-{uuid.uuid4().hex[:8]}.sock"  # short: sun_path is 108 bytes
    config = tmp_path / "pamfr.toml"
    config.write_text('[log]\nformat = "json"\n')
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(60)
        try:
            daemon = start_daemon(
                sqlite_url,
                tmp_path / "serve.log",
                env={"NOTIFY_SOCKET": path, "PAMFR_CONFIG": str(config)},
            )
            try:
                assert sock.recv(256) == b"READY=1"
                # READY comes after the listener: a GAM can connect at once.
                assert send(daemon.port, [message("A28", Person(ipp="N1"), "N-1")])[0].code
            finally:
                assert daemon.stop() == 0
            assert sock.recv(256) == b"STOPPING=1"
        finally:
            os.unlink(path)
    # The configuration's [log] format applies too.
    assert all(json.loads(line) for line in daemon.log().splitlines() if line.strip())


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((REPO / "conf" / "pamfr.service").read_text())
    return parser


def test_systemd_unit_declares_notify_restart_user_and_hardening():
    unit = _unit()
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["Restart"] == "on-failure"
    assert service["User"] == "pamfr" and service["DynamicUser"] == "yes"
    assert re.fullmatch(r"\S+/pamfr --config \S+ serve", service["ExecStart"])
    assert service["ExecReload"].endswith("kill -HUP $MAINPID")
    # Above the default shutdown_grace (30 s): in-flight messages are answered on stop.
    assert int(service["TimeoutStopSec"].removesuffix("s")) > 30
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
    }.items():
        assert service[key] == value, key
    assert "multi-user.target" in unit["Install"]["WantedBy"]


def _service_block(text: str, name: str) -> str:
    found = re.search(rf"^  {name}:\n((?:    .*\n|\n)+)", text, re.MULTILINE)
    assert found, f"no service {name}"
    return found.group(1)


def test_compose_runs_pamfr_against_its_postgresql():
    text = (REPO / "compose.yaml").read_text()
    assert "\t" not in text  # YAML forbids tabs in indentation
    assert re.search(r"^services:$", text, re.MULTILINE)
    db, pamfr = _service_block(text, "db"), _service_block(text, "pamfr")
    assert re.search(r"image: postgres:\d+", db) and "pg_isready" in db
    assert "build: ." in pamfr and "condition: service_healthy" in pamfr
    url = re.search(r"PAMFR_DATABASE_URL: (\S+)", pamfr).group(1)
    assert url.startswith("postgresql+psycopg://pamfr:") and url.endswith("@db/pamfr")
    assert '"2575:2575"' in pamfr
    # who may send identities is said, not left open to whoever reaches the port
    assert re.search(r"PAMFR_SERVER_ALLOWED_PEERS: '\[\"[0-9.]+", pamfr), pamfr


def test_dockerfile_is_non_root_with_healthcheck_and_no_test_tools():
    text = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n.*/readyz", text, re.MULTILINE)
    installs = re.findall(r"pip install ([^\n\\&]+)", text)
    # the daemon's locked dependencies with their hashes, not the [test] extra, then pamfr
    assert [i.strip() for i in installs] == [
        "--require-hashes --no-deps -r requirements/daemon-pg.txt",
        "--no-deps --no-build-isolation --no-index .",
    ]
    assert re.search(r'^CMD \["pamfr", "serve"\]', text, re.MULTILINE)
    # listening on 0.0.0.0 with an allow-list of private ranges, never open to any peer
    assert "PAMFR_SERVER_HOST=0.0.0.0" in text and "ALLOW_ANY_PEER" not in text
    peers = re.search(r"PAMFR_SERVER_ALLOWED_PEERS='(\[.*?\])'", text)
    assert peers and json.loads(peers.group(1)), text


def _docker_unavailable() -> str | None:
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no docker engine on this machine ({type(exc).__name__})"
    if info.returncode != 0:
        return f"no docker engine on this machine (docker info: {info.stderr.strip()[:120]})"
    return None


@pytest.mark.slow
def test_image_builds_and_answers_the_public_corpus():
    reason = _docker_unavailable()
    if reason:
        pytest.skip(reason)
    tag = f"pamfr-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "build", "-t", tag, str(REPO)], check=True, timeout=900)
    container = subprocess.run(
        ["docker", "run", "-d", "--rm", "-p", "127.0.0.1::2575", tag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        port = (
            subprocess.run(
                ["docker", "port", container, "2575/tcp"],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.split(":")[-1]
            .strip()
        )
        deadline = time.monotonic() + 120
        logs = ""
        while "listening on" not in logs and time.monotonic() < deadline:
            time.sleep(1)
            logs = subprocess.run(
                ["docker", "logs", container], capture_output=True, text=True
            ).stderr
        user = subprocess.run(
            ["docker", "exec", container, "id", "-u"], capture_output=True, text=True
        ).stdout.strip()
        assert user != "0"
        from pamfr.ingest.files import split_messages

        corpus = [
            m for f in sorted(PUBLIC_CORPUS.glob("*.hl7")) for m in split_messages(f.read_bytes())
        ]
        acks = send(int(port), corpus)
        assert len(acks) == len(corpus) and all(a.code in ("AA", "AE", "AR") for a in acks)
        assert any(a.code == "AA" for a in acks)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)
