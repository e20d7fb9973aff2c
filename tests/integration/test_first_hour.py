"""The first hour of an integration engineer (issue: the README followed literally on a fresh
clone): each stumble, as the exact command a newcomer ran, over real stores, a real daemon and
real files, answered by one clear line and its exit status."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from pamfr.hl7.samples import Person, message
from pamfr.store.db import alembic_config
from tests.conftest import REPO
from tests.helpers import run_cli, send, show_json, start_daemon


def one_line(result: subprocess.CompletedProcess, *named: str) -> str:
    """The command failed with exit 2 and one line on stderr naming these words."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for word in named:
        assert word in lines[0], result.stderr
    return lines[0]


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- 2. tracebacks where one line was promised ------------------------------------------------


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["db", "upgrade"], ["messages"]])
def test_2_a_sqlite_path_under_a_file_is_one_line(tmp_path, command):
    plain = tmp_path / "plain"
    plain.write_text("not a folder\n")
    for url in ("sqlite:////etc/passwd/x.db", f"sqlite:///{plain}/x.db"):
        result = run_cli(*command, "--db", url)
        one_line(result, "--db / database.url")
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command", [["serve", "--port", "0"], ["db", "upgrade"], ["messages"], ["events"]]
)
def test_2_a_db_that_names_a_text_file_is_refused_in_one_line(tmp_path, command):
    notes = tmp_path / "notes.txt"
    notes.write_text("some notes, not a database\n" * 100)
    result = run_cli(*command, "--db", f"sqlite:///{notes}")
    one_line(result, "--db / database.url", "is not a SQLite database")
    assert notes.read_text() == "some notes, not a database\n" * 100


# -- 3. a mistyped path ---------------------------------------------------------------------


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["db", "upgrade"]])
def test_3_a_mistyped_sqlite_folder_creates_nothing(tmp_path, command):
    missing = tmp_path / "nonexistent" / "dir"
    result = run_cli(*command, "--db", f"sqlite:///{missing}/x.db")
    one_line(result, "the folder", str(missing), "does not exist")
    assert not (tmp_path / "nonexistent").exists()
    result = run_cli(*command, "--db", "sqlite:////nonexistent/dir/x.db")
    one_line(result, "/nonexistent/dir does not exist")
    assert not Path("/nonexistent").exists()


# -- 4 and 5. read-only commands and --config after the subcommand ----------------------------


def test_4_5_read_only_commands_need_no_webhook_secret_and_take_config(sqlite_url, tmp_path):
    http = free_port()
    config = tmp_path / "prod.toml"
    config.write_text(
        f'[http]\nlisten = "127.0.0.1:{http}"\n\n'
        '[[webhooks]]\nname = "crm"\nurl = "http://127.0.0.1:9/pamfr-events"\n'
        'secret_env = "PAMFR_WEBHOOK_CRM_SECRET"\n'
    )
    env = {
        "PAMFR_WEBHOOK_CRM_SECRET": "s3cret-of-the-crm-0123456789abcdef",
        "PAMFR_RECEIVER_PARSE_WORKERS": "0",
    }
    daemon = start_daemon(sqlite_url, tmp_path / "serve.log", "--config", str(config), env=env)
    try:
        (ack,) = send(daemon.port, [message("A28", Person("FH1"), "FH-1")])
        assert ack.code == "AA"
        unset = {"PAMFR_WEBHOOK_CRM_SECRET": ""}
        for command in (
            ["messages", "--config", str(config), "--db", sqlite_url],
            ["events", "--config", str(config), "--db", sqlite_url],
            ["patient", "show", "--ipp", "FH1", "--config", str(config), "--db", sqlite_url],
            ["status", "--config", str(config)],
            [
                "db",
                "backup",
                str(tmp_path / "copy.db"),
                "--config",
                str(config),
                "--db",
                sqlite_url,
            ],
        ):
            result = run_cli(*command, env=unset)
            assert result.returncode == 0, (command, result.stderr)
            assert "secret_env" not in result.stderr
        status = run_cli("status", "--config", str(config), "--json", env=unset)
        assert json.loads(status.stdout)["readiness"]["status"] == "ready"
        # The command that delivers still needs it, in one line.
        retry = run_cli("events", "--retry", "crm", "--config", str(config), env=unset)
        one_line(retry, "secret_env", "PAMFR_WEBHOOK_CRM_SECRET")
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["db", "upgrade"],
        ["db", "backup", "x.db"],
        ["messages"],
        ["send", "x.hl7", "--to", "h:1"],
        ["patient", "show"],
        ["patient", "history"],
        ["patient", "find"],
        ["patient", "collisions"],
        ["watch"],
        ["replay", "x"],
        ["generate"],
        ["status"],
        ["reprocess"],
        ["purge"],
        ["api"],
        ["events"],
    ],
)
def test_5_config_is_taken_after_every_subcommand(command):
    from click.testing import CliRunner

    from pamfr.cli import main

    result = CliRunner().invoke(main, [*command, "--config", "c.toml", "--help"])
    assert result.exit_code == 0 and "--config FILE" in result.stdout, result.output


# -- 6. the default store and ./run.sh --------------------------------------------------------


def test_6_a_relative_store_in_a_configuration_file_is_read_from_its_folder(tmp_path):
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "pamfr.toml").write_text('[database]\nurl = "sqlite:///store/pamfr.db"\n')
    (conf / "store").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    upgrade = subprocess.run(
        [str(REPO / ".venv" / "bin" / "pamfr"), "db", "upgrade", "--config", "../etc/pamfr.toml"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env={**os.environ, "PAMFR_CONFIG": "", "PAMFR_DATABASE_URL": ""},
    )
    assert upgrade.returncode == 0, upgrade.stderr
    assert str(conf / "store" / "pamfr.db") in upgrade.stdout
    assert (conf / "store" / "pamfr.db").is_file() and not (elsewhere / "store").exists()


def test_6_the_default_store_is_never_the_current_folder(tmp_path):
    from pamfr.settings.location import default_database_url, pamfr_home

    url = default_database_url()
    assert url == f"sqlite:///{pamfr_home() / 'var' / 'pamfr.db'}"
    assert Path(url.removeprefix("sqlite:///")).is_absolute()
    help_text = run_cli("messages", "--help", env={"PAMFR_DATABASE_URL": ""}).stdout
    assert "sqlite:///./var" not in help_text


def test_6_run_sh_says_where_the_store_is_and_what_to_do_next():
    result = subprocess.run(
        ["./run.sh", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PAMFR_DATABASE_URL": "", "PAMFR_CONFIG": ""},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    said = result.stderr
    assert f"store: sqlite:///{REPO / 'var' / 'pamfr.db'} (--db" in said
    assert f'export PATH="{REPO / ".venv" / "bin"}:$PATH"' in said
    assert "source .venv/bin/activate" in said
    assert "pamfr messages" in said and "pamfr patient show --ipp" in said
    assert "Usage: pamfr serve" in result.stdout


# -- 7. serve --no-migrate on a store that is not at the head revision ------------------------


def test_7_serve_no_migrate_refuses_a_store_not_at_the_head(tmp_path):
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    result = run_cli("serve", "--no-migrate", "--port", "0", "--db", empty)
    one_line(result, "pamfr db upgrade", head_revision(), "empty")
    old = f"sqlite:///{tmp_path / 'old.db'}"
    assert run_cli("db", "upgrade", "--revision", "0003", "--db", old).returncode == 0
    result = run_cli("serve", "--no-migrate", "--port", "0", "--db", old)
    one_line(result, "pamfr db upgrade", "at schema revision 0003")


# -- 8. pamfr send ----------------------------------------------------------------------------


def test_8_send_of_a_frame_without_its_end_block_says_so(tmp_path):
    cut = tmp_path / "cut.hl7"
    cut.write_bytes(b"\x0b" + message("A28", Person("S8"), "S8").encode())
    result = run_cli("send", str(cut), "--to", f"127.0.0.1:{free_port()}")
    one_line(result, "cut.hl7", "never ends", "end block", "nothing sent")


def test_8_send_to_a_daemon_that_is_not_running_is_exit_2_like_replay(tmp_path):
    good = tmp_path / "a28.hl7"
    good.write_text(message("A28", Person("S9"), "S9"))
    port = free_port()
    result = run_cli("send", str(good), "--to", f"127.0.0.1:{port}")
    one_line(result, f"cannot connect to 127.0.0.1:{port}", "connection refused", "nothing sent")
    replay = run_cli("replay", str(good), "--to", f"127.0.0.1:{port}")
    assert replay.returncode == 2 and "nothing sent" in replay.stderr


# -- 9. the smaller ones -----------------------------------------------------------------------


def test_9_a_bad_port_names_the_flag():
    result = run_cli("serve", "--port", "99999")
    one_line(result, "--port", "99999", "0<=x<=65535")
    result = run_cli("serve", env={"PAMFR_SERVER_PORT": "99999"})
    line = one_line(result, "server.port")
    assert "(environment)" not in line


def test_9_serve_help_names_the_log_section():
    text = " ".join(run_cli("serve", "--help").stdout.split())
    assert "[logging]" not in text and "[log] format" in text


def test_9_history_says_create_for_the_message_that_created_a_patient(sqlite_url, engine):
    run_cli("db", "upgrade", "--db", sqlite_url)
    from pamfr.path.receiver import Receiver

    receiver = Receiver(engine)
    assert receiver.handle(message("A01", Person("H1"), "H1").encode()).code == "AA"
    assert receiver.handle(message("A31", Person("H2"), "H2").encode()).code == "AA"
    engine.dispose()
    for ipp, event in (("H1", "A01"), ("H2", "A31")):
        text = run_cli("patient", "history", "--ipp", ipp, "--db", sqlite_url).stdout
        assert re.search(rf"{event}\s+create", text), text
        assert f"{event} update" not in text


def test_9_pamfr_api_names_every_route_it_serves(sqlite_url, tmp_path):
    run_cli("db", "upgrade", "--db", sqlite_url)
    log = tmp_path / "api.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                str(REPO / ".venv" / "bin" / "pamfr"),
                "api",
                "--db",
                sqlite_url,
                "--listen",
                "127.0.0.1:0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("PAMFR_")},
        )
    try:
        for _ in range(600):
            if "FHIR API on" in log.read_text() or proc.poll() is not None:
                break
            import time

            time.sleep(0.05)
        assert "(/fhir, /events, /healthz)" in log.read_text()
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_9_utf8_bytes_declared_8859_15_are_read_as_utf8_with_a_warning(sqlite_url, tmp_path):
    misdeclared = message("A28", Person("U8", used_name="Hélène"), "U8", charset="8859/15")
    daemon = start_daemon(
        sqlite_url, tmp_path / "serve.log", env={"PAMFR_RECEIVER_PARSE_WORKERS": "0"}
    )
    try:
        (ack,) = send(daemon.port, [misdeclared.encode("utf-8")])
    finally:
        assert daemon.stop() == 0
    assert (ack.code, ack.err_codes, ack.err_locations) == ("AA", ["103"], ["MSH^1^18"])
    assert ack.errs[0][4] == "W" and "UTF-8" in ack.errs[0][8]
    assert show_json(sqlite_url, "--ipp", "U8")["used_name"] == "Hélène"


def test_a_port_of_digits_outside_ascii_is_one_line(tmp_path):
    good = tmp_path / "a28.hl7"
    good.write_text(message("A28", Person("S10"), "S10"))
    # "²" is a digit to str.isdigit(), not to int(): it must not reach int()
    one_line(run_cli("send", str(good), "--to", "127.0.0.1:2²"), "HOST:PORT", "2²")
    one_line(run_cli("serve", env={"PAMFR_HTTP_LISTEN": "127.0.0.1:8²"}), "http.listen")
