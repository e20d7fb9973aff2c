"""The command lines of the README's "Keeping and reprocessing" section, read from the README
and run as written (placeholders filled in) against real stores."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import uuid

from sqlalchemy import create_engine, func, select, text

from pamfr.hl7.samples import Person, message
from pamfr.path.receiver import Receiver
from pamfr.store.db import make_engine, upgrade
from pamfr.store.schema import message as message_table
from tests.conftest import PG_ADMIN_URL, REPO

SECTION = "## Keeping and reprocessing what was received"


def readme_commands(prefix: str) -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL):
        for line in block.splitlines():
            command = line.split("#", 1)[0].strip()
            if command.startswith(prefix):
                lines.append(command)
    return lines


def test_readme_pamfr_lines_run(sqlite_url, engine, tmp_path):
    Receiver(engine).handle(
        message("A28", Person(ipp="RD1", ins="123456789012345"), "RD-1").encode()
    )
    Receiver(engine, allowed_senders=["X"]).handle(
        message("A28", Person(ipp="RD2"), "RD-2").encode()
    )
    engine.dispose()
    commands = readme_commands("pamfr ")
    assert {c.split()[1] for c in commands} >= {"reprocess", "purge", "db"}
    outputs = []
    for command in commands:
        argv = [sys.executable, "-m", "pamfr", *shlex.split(command)[1:]]
        argv = [str(tmp_path / a) if a.endswith(".db") else a for a in argv]
        argv = [sqlite_url if a == "URL" else a for a in argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr)
        outputs.append(done.stdout)
    joined = "\n".join(outputs)
    assert "reprocessed 1 message(s) answered AR: AA 1" in joined
    assert "reprocessed 1 message(s) answered AE: AE 1" in joined
    assert (tmp_path / "pamfr-copy.db").is_file()


def test_readme_pg_dump_and_restore(tmp_path):
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    names = [f"pamfr_bk_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        source_url = f"{base}/{names[0]}"
        upgrade(source_url)
        engine = make_engine(source_url)
        receiver = Receiver(engine)
        for n in range(5):
            receiver.handle(message("A28", Person(ipp=f"PGD{n}"), f"PGD-{n}").encode())
        engine.dispose()
        commands = readme_commands("pg_")
        assert [c.split()[0] for c in commands] == ["pg_dump", "pg_restore"]
        for command, name in zip(commands, names, strict=True):
            argv = shlex.split(command)
            conninfo = f"host=127.0.0.1 user=postgres dbname={name}"
            argv = [conninfo if a.startswith("host=") else a for a in argv]
            argv = [str(tmp_path / a) if a.endswith(".dump") else a for a in argv]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, (command, done.stderr)
        restored = make_engine(f"{base}/{names[1]}")
        with restored.connect() as conn:
            ids = conn.execute(select(message_table.c.control_id).order_by(message_table.c.id))
            assert list(ids.scalars()) == [f"PGD-{n}" for n in range(5)]
            assert conn.execute(select(func.count()).select_from(message_table)).scalar() == 5
        restored.dispose()
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
