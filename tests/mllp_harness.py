"""An MLLP test harness: a real pamfr MLLP server on a test database, fed messages with
unique control ids, read back through `pamfr patient`."""

from __future__ import annotations

import itertools
import json

from click.testing import CliRunner
from sqlalchemy import func, select

from pamfr.cli import main
from pamfr.hl7.samples import Person, message
from pamfr.store.db import make_engine
from pamfr.store.schema import message as message_table
from tests.helpers import Ack, send

_control_ids = itertools.count(1)


def msg(event: str, person: Person, **kw) -> str:
    """A sample message with a control id no other message of the run has."""
    return message(event, person, f"ID{next(_control_ids)}", **kw)


def with_pid(text: str, **fields: str) -> str:
    """The message with PID fields replaced, e.g. with_pid(m, f7='""')."""
    segments = text.split("\r")
    for i, segment in enumerate(segments):
        if segment.startswith("PID|"):
            values = segment.split("|")
            for key, value in fields.items():
                n = int(key.lstrip("f"))
                values += [""] * (n + 1 - len(values))
                values[n] = value
            segments[i] = "|".join(values)
            break
    return "\r".join(segments)


def without(segment: str, text: str) -> str:
    return "\r".join(s for s in text.split("\r") if not s.startswith(segment + "|"))


def ipp(value: str) -> tuple[str, str]:
    return ("--ipp", value)


class Feed:
    """A real pamfr server on the test database, and the CLI read side on the same database."""

    def __init__(self, port: int, db_url: str) -> None:
        self.port = port
        self.db_url = db_url
        self.runner = CliRunner()

    def __call__(self, *messages: str | bytes) -> list[Ack]:
        return send(self.port, list(messages))

    def one(self, text: str | bytes) -> Ack:
        return self(text)[0]

    def ok(self, *messages: str) -> None:
        acks = self(*messages)
        assert [a.code for a in acks] == ["AA"] * len(messages), [a.errs for a in acks]

    def cli(self, *args: str):
        return self.runner.invoke(main, [*args, "--db", self.db_url])

    def show(self, *selector: str) -> dict:
        result = self.cli("patient", "show", *selector, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def history(self, *selector: str) -> list[dict]:
        result = self.cli("patient", "history", *selector, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def exit_code(self, *selector: str) -> int:
        return self.cli("patient", "show", *selector, "--json").exit_code

    def count(self, table) -> int:
        engine = make_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(table)).scalar_one()
        finally:
            engine.dispose()

    def last_logged(self) -> dict:
        engine = make_engine(self.db_url)
        try:
            with engine.connect() as conn:
                query = select(message_table).order_by(message_table.c.id.desc()).limit(1)
                return dict(conn.execute(query).mappings().one())
        finally:
            engine.dispose()
