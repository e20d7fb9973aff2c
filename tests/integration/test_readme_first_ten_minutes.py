"""The README's "first ten minutes", run as written, in order: a real daemon fed the public
example messages, the commands a newcomer types, then the HTTP port with a token, FHIR, the
change feed and a webhook from the README's own configuration."""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import tomllib

from tests.conftest import REPO
from tests.helpers import start_daemon
from tests.integration.test_readme_commands import (
    FENCED,
    FIRST_TEN_MINUTES,
    _curl,
    pamfr_args,
    readme_section,
)
from tests.webhook_sink import WebhookSink

SECTION = readme_section("The first ten minutes")
SECRET = "the-secret-of-my-app-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def the_configuration() -> str:
    (toml,) = [body for language, body in FENCED.findall(SECTION) if language == "toml"]
    return toml


def run(line: str, env: dict, mllp: int) -> subprocess.CompletedProcess:
    """A README pamfr line, with its glob expanded from the clone as a shell would."""
    words = []
    for word in shlex.split(line.replace("127.0.0.1:2575", f"127.0.0.1:{mllp}")):
        matched = sorted(glob.glob(word, root_dir=REPO)) if "*" in word else []
        words += matched or [word]
    assert words[0] == "pamfr"
    return subprocess.run(
        [sys.executable, "-m", "pamfr", *words[1:]],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_the_first_ten_minutes_as_written(sqlite_url, tmp_path):
    lines = FIRST_TEN_MINUTES
    assert lines[0] == "./run.sh" and "./run.sh --config pamfr.toml" in lines
    restart = lines.index("./run.sh --config pamfr.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAMFR_")}
    env["PAMFR_DATABASE_URL"] = sqlite_url
    env["PAMFR_RECEIVER_PARSE_WORKERS"] = "0"

    daemon = start_daemon(sqlite_url, tmp_path / "first.log", env=env)
    try:
        for line in lines[1:restart]:
            result = run(line, env, daemon.port)
            args = pamfr_args(line)
            if args[0] == "send":  # the ANS examples reuse a control id: one AE 205
                assert result.returncode == 1, result.stderr
                assert result.stdout.count(" #1: ") == 8
                assert "ERR 205 MSH^1^10" in result.stdout
            else:
                assert result.returncode == 0, (line, result.stderr)
            if args[:2] == ["patient", "show"]:
                assert "PAT-TROIS" in result.stdout and "qualifiee" in result.stdout
            if args == ["messages"]:
                assert len(result.stdout.strip().splitlines()) == 1 + 8
    finally:
        assert daemon.stop() == 0

    # The configuration as the README shows it, on this machine's free ports.
    http, sink = free_port(), WebhookSink(SECRET)
    shown = the_configuration()
    token = tomllib.loads(shown)["http"]["tokens"]["my-app"]
    config = tmp_path / "pamfr.toml"
    config.write_text(
        shown.replace("127.0.0.1:8090", f"127.0.0.1:{http}").replace(
            "http://127.0.0.1:8099/pamfr-events", sink.url
        )
    )
    env["PAMFR_WEBHOOK_MY_APP_SECRET"] = SECRET
    daemon = start_daemon(sqlite_url, tmp_path / "second.log", "--config", str(config), env=env)
    try:
        for line in lines[restart + 1 :]:
            if line.startswith("./run.sh"):  # the prose's mentions of the two starts above
                continue
            if line.startswith("curl "):
                places = {"$TOKEN": token, "127.0.0.1:8090": f"127.0.0.1:{http}"}
                status, body = _curl(line, places)
                assert status == 200, (line, body)
                answer = json.loads(body)
                if "/fhir/Patient?identifier=" in line:
                    assert answer["total"] == 1
                    patient = answer["entry"][0]["resource"]
                    assert patient["name"][0]["family"] == "PAT-TROIS"
                else:
                    types = [e["type"] for e in answer["events"]]
                    assert "patient.created" in types
                assert _curl(line, {**places, "$TOKEN": "wrong-token-0123456789"})[0] == 401
                continue
            result = run(line.replace("pamfr.toml", str(config)), env, daemon.port)
            args = pamfr_args(line)
            if args[0] == "send":  # answered from the log: the same ACKs, nothing twice
                assert result.returncode == 1 and result.stdout.count(" #1: ") == 8
            else:
                assert result.returncode == 0, (line, result.stderr)
                assert re.search(r"\bready\b", result.stdout), result.stdout
        deadline = time.monotonic() + 60
        while not sink.received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sink.received and all(r.signed for r in sink.received)
    finally:
        assert daemon.stop() == 0
        sink.stop()
