"""The command line as a new user meets it: bad or unreachable stores, bad arguments and
schema revisions give one clear line and exit 2, reading never creates a store."""

from __future__ import annotations

import socket
import subprocess
import sys
from importlib.metadata import version

import pytest
from click.testing import CliRunner, Result

from pamfr.cli import main
from pamfr.hl7.samples import Person, message
from pamfr.store.db import current_revision
from tests.conftest import _fresh_pg_schema
from tests.helpers import run_cli, start_daemon

READERS = [
    ["messages"],
    ["patient", "show", "--ipp", "1"],
    ["patient", "history", "--ipp", "1"],
    ["patient", "find", "--name", "X"],
]


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def one_line_error(stderr: str, *named: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: "), stderr
    for word in named:
        assert word in lines[0], stderr
    return lines[0]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", READERS, ids=lambda c: "-".join(c[:2]))
def test_reading_a_wrong_sqlite_path_creates_nothing(tmp_path, command):
    missing = tmp_path / "nowhere" / "pamfr.db"
    result = cli(*command, "--db", f"sqlite:///{missing}")
    assert result.exit_code == 2
    one_line_error(result.stderr, "--db / database.url", str(missing), "no SQLite database")
    assert not missing.parent.exists()


def test_reading_a_file_without_the_schema_says_so_and_leaves_it_empty(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    result = cli("messages", "--db", f"sqlite:///{empty}")
    assert result.exit_code == 2
    one_line_error(result.stderr, "--db / database.url", "holds no pamfr store", "db upgrade")
    assert empty.stat().st_size == 0


def test_an_unreachable_postgresql_is_one_line_not_a_traceback(tmp_path):
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/test"
    for args in (
        ["messages", "--db", url],
        ["db", "upgrade", "--db", url],
        ["replay", str(tmp_path), "--local", "--no-migrate", "--db", url],
    ):
        result = run_cli(*args, timeout=60)
        assert result.returncode == 2, result.stderr
        line = one_line_error(result.stderr, "--db / database.url", "cannot use")
        assert "refused" in line.lower()
    config = tmp_path / "pamfr.toml"
    config.write_text(f'[database]\nurl = "{url}"\n')
    served = run_cli("serve", "--config", str(config), "--port", "0", timeout=60)
    assert served.returncode == 2, served.stderr
    assert "Traceback" not in served.stderr
    assert "Error: --db / database.url: cannot use" in served.stderr


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "cannot read 'not a url' as a database URL"),
        ("mysql://root@127.0.0.1/pamfr", "unsupported database 'mysql'"),
        ("postgresql+asyncpg://x@127.0.0.1/y", "write postgresql+psycopg://"),
    ],
)
def test_urls_pamfr_cannot_use_are_refused_in_one_line(url, says):
    result = cli("messages", "--db", url)
    assert result.exit_code == 2
    one_line_error(result.stderr, "--db / database.url", says)


def test_postgres_scheme_is_taken_as_postgresql(pg_server_url):
    url = _fresh_pg_schema(pg_server_url)
    short = url.replace("postgresql+psycopg://", "postgres://", 1)
    upgraded = cli("db", "upgrade", "--db", short)
    assert upgraded.exit_code == 0, upgraded.output
    assert current_revision(url) == "0007"
    assert cli("messages", "--db", short).exit_code == 0


def _without_psycopg(*args: str) -> subprocess.CompletedProcess:
    """`pamfr ARGS` as in a daemon-only install, where psycopg cannot be imported."""
    code = f"import sys; sys.modules['psycopg'] = None\nfrom pamfr.cli import main\nmain({args!r})"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_without_psycopg_sqlite_works_and_postgresql_says_to_install_the_pg_extra(tmp_path):
    folder = tmp_path / "set"
    assert cli("generate", "--count", "20", "--per-file", "10", "--out", str(folder)).exit_code == 0
    url = f"sqlite:///{tmp_path / 'pamfr.db'}"
    replayed = _without_psycopg("replay", str(folder), "--local", "--db", url)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "ACK codes: AA 20" in replayed.stdout
    result = _without_psycopg("messages", "--db", "postgresql://postgres@127.0.0.1/test")
    assert result.returncode == 2, result.stderr
    one_line_error(result.stderr, "--db / database.url", "pip install 'pamfr[pg]'")


def test_a_missing_configuration_file_is_one_line(tmp_path):
    result = cli("messages", "--config", str(tmp_path / "nope.toml"))
    assert result.exit_code == 2
    one_line_error(result.stderr, "configuration file not found", "nope.toml")


def test_serve_takes_config_after_the_command(sqlite_url, tmp_path):
    config = tmp_path / "pamfr.toml"
    config.write_text('[logging]\nlevel = "debug"\n')
    daemon = start_daemon(sqlite_url, tmp_path / "serve.log", "--config", str(config))
    try:
        assert daemon.port > 0
    finally:
        assert daemon.stop() == 0
    assert "DEBUG" in daemon.log()  # the file was read


def test_version():
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"pamfr {version('pamfr')}"


def test_db_upgrade_reports_the_real_revision_and_never_goes_down(tmp_path):
    url = f"sqlite:///{tmp_path / 'pamfr.db'}"
    first = cli("db", "upgrade", "--db", url, "--revision", "0002")
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("database schema at 0002:")
    assert current_revision(url) == "0002"
    head = cli("db", "upgrade", "--db", url)
    assert head.stdout.startswith("database schema at 0007:")
    down = cli("db", "upgrade", "--db", url, "--revision", "0001")
    assert down.exit_code == 2 and down.stdout == ""
    one_line_error(down.stderr, "--revision", "0007", "never downgrades")
    assert current_revision(url) == "0007"
    unknown = cli("db", "upgrade", "--db", url, "--revision", "0099")
    assert unknown.exit_code == 2
    one_line_error(unknown.stderr, "--revision", "unknown revision '0099'")


def test_patient_find_refuses_what_is_not_a_date(sqlite_url, receiver_on_sqlite):
    person = Person(ipp="F-1", birth_name="DUPONT", birth_date="19790328")
    assert receiver_on_sqlite.handle(message("A28", person, "F1").encode()).code == "AA"
    for bad in ("28/03/1979", "1979-02-30", "19790328", "1979-3-28", "tomorrow"):
        result = cli("patient", "find", "--db", sqlite_url, "--birth-date", bad)
        assert result.exit_code == 2, bad
        one_line_error(result.stderr, "--birth-date", "YYYY-MM-DD")
    for good in ("1979-03-28",):
        found = cli("patient", "find", "--db", sqlite_url, "--birth-date", good)
        assert found.exit_code == 0 and "DUPONT" in found.stdout


@pytest.fixture
def receiver_on_sqlite(sqlite_url):
    from pamfr.path.receiver import Receiver
    from pamfr.store.db import make_engine

    engine = make_engine(sqlite_url)
    yield Receiver(engine)
    engine.dispose()
