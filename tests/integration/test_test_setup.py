"""The test suite itself, as a new user runs it: without PostgreSQL, one clear reason."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers import start_daemon


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
    # every test of the two files skipped, however many they hold
    assert re.search(r"\b\d+ skipped in ", out) and "passed" not in out, out
    assert "error" not in out.lower(), out
    assert "Traceback" not in out, out
    reasons = {line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("SKIPPED")}
    assert len(reasons) == 1, out  # both tests give the one reason found at session start
    (reason,) = reasons
    assert "PAMFR_TEST_PG_URL" in reason and url.split("@")[1].split("/")[0] in reason


# -- what ./run.sh and ./test.sh install ---------------------------------------------------

TEST_TOOLS = (
    "pytest",
    "hypothesis",
    "ruff",
    "import-linter",
    "cryptography",
    "atheris",
    "playwright",
)


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=;! ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_daemon_dependencies_hold_no_test_tool_and_no_psycopg() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = _names(project["dependencies"])
    assert not runtime & {*TEST_TOOLS, "psycopg"}, runtime
    assert _names(project["optional-dependencies"]["pg"]) == {"psycopg"}
    assert {*TEST_TOOLS, "psycopg"} <= _names(project["optional-dependencies"]["test"])


@pytest.fixture
def scripts_with_a_recording_python(tmp_path: Path) -> tuple[Path, Path]:
    """run.sh and scripts/setup.sh in a copy of the repository whose .venv/bin/python and
    .venv/bin/pamfr only record how they were called (no network, no install)."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("run.sh", "test.sh", "scripts/setup.sh", "pyproject.toml"):
        shutil.copy2(REPO / name, repo / name)
    shutil.copytree(REPO / "requirements", repo / "requirements")
    calls = tmp_path / "calls"
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("python", "pamfr", "ruff", "lint-imports", "pytest"):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\n')
        script.chmod(0o755)
    return repo, calls


def _run(repo: Path, *cmd: str, env: dict | None = None) -> None:
    result = subprocess.run(
        list(cmd), cwd=repo, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _calls(calls: Path) -> list[str]:
    lines = calls.read_text().splitlines() if calls.exists() else []
    calls.unlink(missing_ok=True)
    return lines


def _installs(lines: list[str]) -> list[str]:
    """The lock file each set-up installed; each one with its hashes, then pamfr alone."""
    locks = []
    for n, line in enumerate(lines):
        if " install " in line and " -r " in line:
            assert "--require-hashes" in line and "--no-deps" in line, line
            # pip's default index alone: no other index or local wheel folder
            assert "--index-url" not in line and "--find-links" not in line, line
            assert lines[n + 1].endswith("--no-deps --no-build-isolation --no-index -e ."), lines
            locks.append(line.split(" -r ", 1)[1])
    return locks


def test_run_sh_installs_the_daemon_only_and_test_sh_adds_the_rest(
    scripts_with_a_recording_python,
) -> None:
    repo, calls = scripts_with_a_recording_python
    _run(repo, "./run.sh", "--port", "0")
    first = _calls(calls)
    assert _installs(first) == ["requirements/daemon.txt"]
    assert first[-1] == "pamfr serve --port 0"
    _run(repo, "./run.sh")  # set up already: nothing installed again
    assert _installs(_calls(calls)) == []
    _run(repo, "./run.sh", env={"PAMFR_EXTRAS": "pg"})
    assert _installs(_calls(calls)) == ["requirements/daemon-pg.txt"]
    _run(repo, "./test.sh", "-q")
    tested = _calls(calls)
    assert _installs(tested) == ["requirements/test.txt"]
    assert tested[-3:] == ["ruff check .", "lint-imports --no-cache", "pytest -q"]
    _run(repo, "./run.sh")  # the test set-up serves the daemon too
    assert _installs(_calls(calls)) == []


def test_a_daemon_a_test_starts_takes_nothing_of_the_test_process_configuration(
    sqlite_url, tmp_path, monkeypatch
):
    """start_daemon builds the daemon's environment from scratch: a PAMFR_* variable of the
    developer's shell (or of another test) never changes what a test runs."""
    monkeypatch.setenv("PAMFR_LOG_LEVEL", "debug")
    monkeypatch.setenv("PAMFR_SERVER_MAX_CONNECTIONS", "1")
    monkeypatch.setenv("NOT_FOR_PAMFR", "a variable of the caller")
    daemon = start_daemon(sqlite_url, tmp_path / "serve.log")
    try:
        environ = Path(f"/proc/{daemon.proc.pid}/environ").read_bytes().split(b"\0")
        names = {item.split(b"=", 1)[0].decode() for item in environ if item}
        assert {n for n in names if n.startswith("PAMFR_")} == {"PAMFR_CONFIG", "PAMFR_HTTP_TOKENS"}
        assert "NOT_FOR_PAMFR" not in names
    finally:
        assert daemon.stop() == 0
    assert " DEBUG " not in daemon.log()
