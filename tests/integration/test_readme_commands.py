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
from pamfr.hl7.samples import Person, message
from pamfr.ingest.expected import store_state
from pamfr.path.receiver import Receiver
from pamfr.store.db import make_engine
from tests.conftest import REPO
from tests.helpers import pamfr_api

README = (REPO / "README.md").read_text(encoding="utf-8")
FENCED = re.compile(r"```(\w*)\n(.*?)```", re.S)


def readme_command_lines(text: str = README) -> list[str]:
    """The lines of the README's sh blocks (comments cut) and its inline `pamfr ...` spans."""
    lines: list[str] = []
    for language, body in FENCED.findall(text):
        if language != "sh":
            continue
        for line in body.splitlines():
            line = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
            if line:
                lines.append(line)
    prose = FENCED.sub("", text)
    for span in re.findall(r"`([^`\n]+)`", prose):
        if re.match(r"(\./run\.sh|(\.venv/bin/)?pamfr)( |$)", span):
            lines.append(span)
    return lines


def pamfr_args(line: str) -> list[str] | None:
    """The arguments of `pamfr` the line runs ([optional] parts included); None for the lines
    another test runs."""
    words = shlex.split(line)
    if words[0] in ("./test.sh", "pg_dump", "pg_restore", "curl"):
        # ./test.sh runs this test; test_readme_keeping.py runs the PostgreSQL backup;
        # the curl lines of /fhir are run below, against `pamfr api`, test_feed.py the one of
        # GET /events
        return None
    if words[0] == "./run.sh":
        words = ["pamfr", "serve", *words[1:]]
    words[0] = Path(words[0]).name
    assert words[0] == "pamfr", f"README command not covered by this test: {line}"
    return [w.strip("[]").removesuffix("...") for w in words[1:] if w.strip("[]")]


def readme_section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else len(README)]


LINES = readme_command_lines()
# Run in order against a daemon fed the public examples: test_readme_first_ten_minutes.py.
FIRST_TEN_MINUTES = readme_command_lines(readme_section("The first ten minutes"))


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
    monkeypatch.setattr("pamfr.cli.ingest.setup_logging", lambda level, fmt=None: None)
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
        if args is None or not _is_cheap(args) or line in FIRST_TEN_MINUTES:
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


# -- the FHIR API's curl lines -------------------------------------------------------------


def _curl(line: str, replace: dict[str, str]) -> tuple[int, str]:
    """A README curl line run as curl would (only -s and -H are used there)."""
    import urllib.error
    import urllib.request

    for placeholder, value in replace.items():
        line = line.replace(placeholder, value)
    words = shlex.split(line)
    assert words[0] == "curl"
    headers, url, rest = {}, None, words[1:]
    while rest:
        word = rest.pop(0)
        if word == "-s":
            continue
        if word == "-H":
            name, _, value = rest.pop(0).partition(":")
            headers[name.strip()] = value.strip()
        else:
            assert url is None and not word.startswith("-"), f"curl option not run: {word}"
            url = word
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_readme_curl_lines_read_a_real_api(tmp_path):

    from pamfr.hl7.samples import nir_with_key
    from pamfr.store.db import upgrade

    curls = [line for line in LINES if line.startswith("curl ") and line not in FIRST_TEN_MINUTES]
    assert any("identifier=urn:oid:1.2.250.1.213.1.4.8|<NIR>" in line for line in curls)
    url = f"sqlite:///{tmp_path / 'pamfr.db'}"
    upgrade(url)
    nir = nir_with_key("1790363220123")
    dupont = Person(
        ipp="000123", birth_name="DUPONT", sex="M", ins=nir, ins_oid="1.2.250.1.213.1.4.8"
    )
    engine = make_engine(url)
    assert Receiver(engine).handle(message("A28", dupont, "R1").encode()).code == "AA"
    engine.dispose()
    token = "readme-0123456789abcdef"
    log_path = tmp_path / "api.log"
    with pamfr_api(url, log_path, {"PAMFR_HTTP_TOKENS": json.dumps({"readme": token})}) as port:
        places = {
            "$TOKEN": token,
            "127.0.0.1:8090": f"127.0.0.1:{port}",
            "<NIR>": nir,
            "<IPP>": "000123",
            "<ID>": "1",
            "<NEXT>": "1",  # the id of the one event, patient.created
            "<VERSION>": "1",  # the message that created it
        }
        for line in curls:
            status, body = _curl(line, places)
            assert status == 200, f"{line}\n{body}"
            answer = json.loads(body)
            if "identifier=" in line or "family=" in line:
                assert answer["total"] == 1, line
                assert answer["entry"][0]["resource"]["id"] == "1"
            elif line.endswith("/<ID>'"):
                assert answer["name"][0]["family"] == "DUPONT"
            elif "/events?after=0" in line:
                assert [(e["id"], e["type"], e["patient_id"]) for e in answer["events"]] == [
                    (1, "patient.created", 1)
                ]
                assert answer["next"] == 1
            elif "/events?after=<NEXT>" in line:
                assert answer == {"events": [], "next": None}
            elif line.endswith("/_history/<VERSION>'"):
                assert answer["meta"]["versionId"] == "1"
        assert _curl(curls[0], {**places, "$TOKEN": "wrong"})[0] == 401
