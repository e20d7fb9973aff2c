"""The test suite itself, as a new user runs it: without PostgreSQL, one clear reason."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.conftest import REPO


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connections refused


def test_without_postgresql_the_pg_tests_say_why_once_and_do_not_error() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/test"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "tests/integration/test_pg_connection_ping.py",
            "tests/integration/test_pg_pipelined_batch.py",
        ],
        cwd=REPO,
        env={**os.environ, "PAMFR_TEST_PG_URL": url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "2 skipped" in out and "error" not in out.lower(), out
    assert "Traceback" not in out, out
    reasons = {line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("SKIPPED")}
    assert len(reasons) == 1, out  # both tests give the one reason found at session start
    (reason,) = reasons
    assert "PAMFR_TEST_PG_URL" in reason and url.split("@")[1].split("/")[0] in reason
