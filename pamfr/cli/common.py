"""What every pamfr command shares: the settings, the --db option, the engine."""

from __future__ import annotations

import logging
from typing import Any

import click

from pamfr.config import ConfigError, Settings, load_settings

log = logging.getLogger("pamfr")

LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)


class Context:
    def __init__(self, config_file: str | None) -> None:
        self.config_file = config_file

    def settings(self, **overrides: Any) -> Settings:
        try:
            return load_settings(self.config_file, overrides)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None


db_option = click.option(
    "--db",
    "db_url",
    metavar="URL",
    help="Database URL (sqlite:///path.db or postgresql+psycopg://user@host/db). "
    "Default: PAMFR_DATABASE_URL, else the configuration, else sqlite:///./var/pamfr.db.",
)


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def open_engine(settings: Settings):
    from pamfr.store.db import make_engine

    return make_engine(
        settings.database.url,
        synchronous=settings.database.sqlite_synchronous,
        busy_timeout=settings.database.sqlite_busy_timeout,
    )


def parse_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)
