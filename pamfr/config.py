"""Configuration: one TOML file, every key overridable by environment and by CLI flags.

Precedence, highest first: CLI flags, environment (PAMFR_<SECTION>_<KEY>, e.g.
PAMFR_DATABASE_URL, PAMFR_SERVER_PORT), the TOML file (--config or PAMFR_CONFIG), defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATABASE_URL = "sqlite:///./var/pamfr.db"


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(2575, ge=0, le=65535)
    max_frame_size: int = Field(1024 * 1024, ge=1024)
    idle_timeout: float = Field(300.0, gt=0)
    frame_timeout: float = Field(60.0, gt=0)
    max_connections: int = Field(256, ge=1)
    shutdown_grace: float = Field(30.0, ge=0)


class DatabaseSettings(BaseModel):
    url: str = DEFAULT_DATABASE_URL
    sqlite_synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    migrate_on_start: bool = True


class ReceiverSettings(BaseModel):
    processing_ids: list[str] = ["P", "D", "T"]
    batch_max: int = Field(64, ge=1)  # messages committed together at most (group commit)
    # Processes that parse messages (hl7apy is CPU-bound); 0 parses in threads of the daemon.
    parse_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=0)


class FiledropSettings(BaseModel):
    dirs: list[str] = []
    quiet_period: float = Field(2.0, ge=0)
    poll_interval: float = Field(1.0, gt=0)
    temp_suffixes: list[str] = [".tmp", ".part", ".filepart"]
    order: Literal["name", "mtime"] = "name"
    done_dir: str = "done"
    error_dir: str = "error"


class LoggingSettings(BaseModel):
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAMFR_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
    )

    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    receiver: ReceiverSettings = ReceiverSettings()
    filedrop: FiledropSettings = FiledropSettings()
    logging: LoggingSettings = LoggingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _CONFIG_FILE is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_CONFIG_FILE))
        return tuple(sources)


_CONFIG_FILE: Path | None = None


class ConfigError(Exception):
    pass


def _deep_set(target: dict[str, Any], dotted: str, value: Any) -> None:
    section, key = dotted.split(".", 1)
    target.setdefault(section, {})[key] = value


def load_settings(
    config_file: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Load the settings; `overrides` maps "section.key" to a CLI value (None = not given)."""
    global _CONFIG_FILE
    path = config_file or os.environ.get("PAMFR_CONFIG")
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"configuration file not found: {path}")
    _CONFIG_FILE = Path(path) if path else None
    init: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _deep_set(init, dotted, value)
    try:
        return Settings(**init)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration ({path or 'defaults'}):\n{exc}") from None
