"""Every command line the README shows parses, and the cheap ones run for real against a
temporary SQLite store: a README command that does not exist fails here."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from pamfr.cli import main
from pamfr.ingest.replay import store_state
from pamfr.receiver import Receiver
from pamfr.samples import Person, message
from pamfr.store.db import make_engine
from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
FENCED = re.compile(r"```(\w*)\n(.*?)```", re.S)


def readme_command_lines() -> list[str]:
    """The lines of the README's sh blocks (comments cut) and its inline `pamfr ...` spans."""
    lines: list[str] = []
    for language, body in FENCED.findall(README):
        if language != "sh":
            continue
        for line in body.splitlines():
            line = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
            if line:
                lines.append(line)
    prose = FENCED.sub("", README)
    for span in re.findall(r"`([^`\n]+)`", prose):
        if re.match(r"(\./run\.sh|(\.venv/bin/)?pamfr)( |$)", span):
            lines.append(span)
    return lines


def pamfr_args(line: str) -> list[str] | None:
    """The arguments of `pamfr` the line runs ([optional] parts included); None for the lines
    another test runs."""
    words = shlex.split(line)
    if words[0] in ("./test.sh", "pg_dump", "pg_restore", "curl"):
        # ./test.sh runs this test; test_readme_keeping.py runs the PostgreSQL backup,
        # test_feed.py the curl line of GET /events
        return None
    if words[0] == "./run.sh":
        words = ["pamfr", "serve", *words[1:]]
    words[0] = Path(words[0]).name
    assert words[0] == "pamfr", f"README command not covered by this test: {line}"
    return [w.strip("[]").removesuffix("...") for w in words[1:] if w.strip("[]")]


LINES = readme_command_lines()


def test_the_readme_shows_commands():
    assert len(LINES) > 15
    assert "pamfr serve [--host H] [--port P] [--db URL] [--config FILE]" in LINES
    assert "./test.sh" in LINES  # run by .ci/run, not from here


@pytest.mark.parametrize("line", [line for line in LINES if pamfr_args(line) is not None])
def test_every_readme_command_line_parses(line):
    args = pamfr_args(line)
    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, f"{line}\n{result.output}"
    assert "Usage:" in result.stdout or args == ["--version"]


# The lines run for real, in the README's order, with their placeholders given real values.
REAL = ("generate", "replay", "messages", "patient", "db", "--version")


def _is_cheap(args: list[str]) -> bool:
    if not args or args[0] not in REAL:
        return False
    return args[0] != "replay" or "--local" in args


def test_the_cheap_readme_commands_run_for_real(tmp_path, monkeypatch):
    monkeypatch.setattr("pamfr.cli.ingest.setup_logging", lambda level: None)
    url = f"sqlite:///{tmp_path / 'pamfr.db'}"
    env = {"PAMFR_DATABASE_URL": url, "PAMFR_CONFIG": ""}
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"], env=env).exit_code == 0
    engine = make_engine(url)
    dupont = Person(ipp="000123", birth_name="DUPONT", birth_date="19790328")
    assert Receiver(engine).handle(message("A28", dupont, "R1").encode()).code == "AA"
    places = {
        "URL": url,
        "set/": str(tmp_path / "set"),
        "report.json": str(tmp_path / "report.json"),
        "expected.json": str(tmp_path / "expected.json"),
        "10000": "120",  # --count: the same command, a smaller set
        "pamfr-copy.db": str(tmp_path / "pamfr-copy.db"),  # db backup: never in the work tree
    }
    ran: list[str] = []
    for line in LINES:
        args = pamfr_args(line)
        if args is None or not _is_cheap(args):
            continue
        args = [places.get(a, a) for a in args]
        if "--expect" in args:  # the state this store reached, as --write-expect records it
            Path(places["expected.json"]).write_text(json.dumps(store_state(engine)))
        result = runner.invoke(main, args, env=env)
        assert result.exit_code == 0, f"{line}\n{result.output}"
        ran.append(args[0] if args[0] != "patient" else f"patient {args[1]}")
        if args[:2] == ["patient", "find"]:
            assert "DUPONT" in result.stdout
        if args[:2] == ["patient", "show"]:
            assert json.loads(result.stdout)["birth_name"] == "DUPONT"
    engine.dispose()
    assert json.loads(Path(places["report.json"]).read_text())["messages"] == 120
    assert {"generate", "replay", "messages", "patient show", "patient history"} <= set(ran)
    assert {"patient find", "db"} <= set(ran)
