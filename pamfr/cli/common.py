"""What every pamfr command shares: the settings, the --db and --config options, the engine,
and errors as one line."""

from __future__ import annotations

import logging
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from pamfr.settings.config import ConfigError, Settings, load_settings

log = logging.getLogger("pamfr")

LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)
DB_KEY = "--db / database.url"


class CommandError(click.ClickException):
    """A bad argument, setting or database: one line on stderr, exit 2."""

    exit_code = 2


class PamfrGroup(click.Group):
    """Every error a command line can meet is one line on stderr, never a usage block or a
    traceback: `Error: <what> (see 'pamfr CMD --help')`, exit 2 for a bad command line."""

    def main(self, args=None, prog_name=None, complete_var=None, **extra: Any):  # type: ignore[override]
        extra["standalone_mode"] = False
        try:
            code = super().main(args, prog_name, complete_var, **extra)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "pamfr"
            click.echo(f"Error: {exc.format_message()} (see '{where} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


class Context:
    def __init__(self, config_file: str | None = None) -> None:
        self.config_file = config_file

    def settings(self, *, reading: bool = False, **overrides: Any) -> Settings:
        """`reading`: a command that only reads, which needs no webhook secret."""
        try:
            return load_settings(self.config_file, overrides, secrets=not reading)
        except ConfigError as exc:
            raise CommandError(str(exc)) from None


def _set_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Context).config_file = value


def config_option(f):
    """`--config FILE` after the command too (`pamfr serve --config FILE`), as before it."""
    return click.option(
        "--config",
        type=click.Path(dir_okay=False),
        expose_value=False,
        callback=_set_config,
        help="TOML configuration file (also PAMFR_CONFIG). See conf/pamfr.toml.",
    )(f)


def db_option(f):
    """`--db URL`, and `--config FILE` with it: the commands that open the store."""
    f = click.option(
        "--db",
        "db_url",
        metavar="URL",
        help="Database URL (sqlite:///path.db, or postgresql+psycopg://user@host/db with "
        "pamfr[pg] installed). "
        "Default: PAMFR_DATABASE_URL, else the configuration, else var/pamfr.db in pamfr's "
        "home (the checkout it runs from, else ~/.local/share/pamfr).",
    )(f)
    return config_option(f)


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # unreadable: said so by database_url's error
        return url


def first_line(exc: BaseException) -> str:
    """The driver's own first line (sqlalchemy adds its background links after it)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


@contextmanager
def database_errors(settings: Settings) -> Iterator[None]:
    """A database URL pamfr cannot use, a missing file, a server that does not answer:
    one line naming the flag and the key, exit 2."""
    from sqlalchemy.exc import DatabaseError, InterfaceError, NoSuchModuleError, OperationalError

    from pamfr.store.db import DatabaseMissing, DatabaseUrlError, SchemaNotAtHead

    url = settings.database.url
    try:
        yield
    except (DatabaseUrlError, SchemaNotAtHead) as exc:
        raise CommandError(f"{DB_KEY}: {exc}") from None
    except DatabaseMissing as exc:
        raise CommandError(
            f"{DB_KEY}: {exc} (check the path; `pamfr db upgrade` creates a store)"
        ) from None
    except NoSuchModuleError as exc:
        raise CommandError(f"{DB_KEY}: {first_line(exc)}") from None
    except (OperationalError, InterfaceError) as exc:
        raise CommandError(f"{DB_KEY}: cannot use {safe_url(url)}: {first_line(exc)}") from None
    except DatabaseError as exc:
        if type(getattr(exc, "orig", None)) is not sqlite3.DatabaseError:
            raise  # a constraint or a programming error: a bug, with its traceback
        # sqlite3's own DatabaseError: "file is not a database" (a text file, a PDF...)
        raise CommandError(
            f"{DB_KEY}: {safe_url(url)} is not a SQLite database ({first_line(exc)})"
        ) from None


def open_engine(settings: Settings, *, read_only: bool = False, check: bool = False):
    """The engine of the configured store. With `read_only` (commands that only read), the
    store must exist and hold pamfr's schema: CommandError otherwise, nothing created.
    With `check`, a store that does not answer is a CommandError too."""
    from sqlalchemy import inspect

    from pamfr.store.db import make_engine

    with database_errors(settings):
        engine = make_engine(
            settings.database.url,
            synchronous=settings.database.sqlite_synchronous,
            busy_timeout=settings.database.sqlite_busy_timeout,
            read_only=read_only,
        )
        if check and not read_only:
            with engine.connect():
                pass
        if read_only:
            with engine.connect() as conn:
                has_schema = inspect(conn).has_table("message")
            if not has_schema:
                engine.dispose()
                raise CommandError(
                    f"{DB_KEY}: {safe_url(settings.database.url)} holds no pamfr store "
                    "(`pamfr db upgrade` creates one)"
                )
    return engine


def parse_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)
