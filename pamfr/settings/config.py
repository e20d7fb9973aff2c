"""Configuration: one TOML file, every key overridable by environment and by CLI flags.

Precedence, highest first: CLI flags, environment (PAMFR_<SECTION>_<KEY>, e.g.
PAMFR_DATABASE_URL, PAMFR_SERVER_PORT), the TOML file (--config or PAMFR_CONFIG), defaults.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pamfr.settings.location import default_database_url, relative_to
from pamfr.transport.access import PeerFilter


class _Section(BaseModel):
    # A misspelt key (say `allowed_peer`) must not silently leave a listener open.
    model_config = ConfigDict(extra="forbid")


class _TlsListener(_Section):
    """A listener's TLS files (the fields are declared by each section, in its own order)."""

    _client_ca_means: ClassVar[str] = "client certificates"

    @field_validator("tls_cert", "tls_key", "tls_client_ca", check_fields=False)
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _tls_pairs(self) -> _TlsListener:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError(f"tls_client_ca ({self._client_ca_means}) needs tls_cert and tls_key")
        return self


class ServerSettings(_TlsListener):
    _client_ca_means: ClassVar[str] = "mutual TLS"
    host: str = "127.0.0.1"
    port: int = Field(2575, ge=0, le=65535)
    max_frame_size: int = Field(1024 * 1024, ge=1024)
    idle_timeout: float = Field(300.0, gt=0)
    frame_timeout: float = Field(60.0, gt=0)
    max_connections: int = Field(256, ge=1)
    # Connections one address may hold open; a new connection must complete its first frame
    # within first_frame_timeout seconds (then idle_timeout applies).
    max_connections_per_peer: int = Field(16, ge=1)
    first_frame_timeout: float = Field(30.0, gt=0)
    shutdown_grace: float = Field(30.0, ge=0)
    # TLS: PEM files. With tls_client_ca, mutual TLS: a client certificate signed by it is required.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    # Who may send: peer addresses or networks (CIDR), and "APPLICATION|FACILITY" patterns
    # matched on MSH-3/MSH-4 (shell wildcards). Empty: everyone. Both are reloaded on SIGHUP.
    allowed_peers: list[str] = []
    allowed_senders: list[str] = []
    # A listen address other than the loopback needs allowed_peers or tls_client_ca, or this
    # set to true on purpose (any address may then send identities; a WARNING says so).
    allow_any_peer: bool = False

    @field_validator("allowed_peers")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        PeerFilter.parse(value)  # ValueError names the bad entry
        return [v.strip() for v in value]

    @field_validator("allowed_senders")
    @classmethod
    def _senders(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern.strip() or pattern.count("|") > 1:
                raise ValueError(f"expected APPLICATION|FACILITY or APPLICATION, got {pattern!r}")
        return [v.strip() for v in value]



class DatabaseSettings(_Section):
    # Default: var/pamfr.db in pamfr's home (settings/location.py), never the current folder.
    url: str = Field(default_factory=default_database_url)
    sqlite_synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    # Seconds a SQLite writer waits for a lock held by another process before the messages
    # of its batch are answered AR 207 (resend later). None: the URL's ?timeout=, else 30.
    sqlite_busy_timeout: float | None = Field(None, gt=0)
    migrate_on_start: bool = True

    @field_validator("url")
    @classmethod
    def _empty_is_the_default(cls, value: str) -> str:
        return value.strip() or default_database_url()


class ReceiverSettings(_Section):
    processing_ids: list[str] = ["P", "D", "T"]
    batch_max: int = Field(64, ge=1)  # messages committed together at most (group commit)
    # Processes that parse messages (hl7apy is CPU-bound); 0 parses in threads of the daemon.
    parse_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=0)


class Hl7Settings(_Section):
    # MSH-18 empty but 8-bit bytes (common from French GAMs): decoded in this set, with a warning.
    default_charset: str = "8859/15"
    # ITI-31 events (A01, A04, Z99...) create an unknown patient; they rewrite a known identity
    # only when this is on (for feeds that send no A31).
    iti31_updates_identity: bool = False
    # A control id already processed with other content: refused (AE 205) or applied anyway.
    reused_control_id: Literal["refuse", "apply"] = "refuse"
    # MSH-15 and MSH-16 both asking for an ACK (HL7 table 0155): the one sent, "application"
    # (AA/AE/AR) or "commit" (CA/CE/CR); "original" ignores MSH-15/16: always AA/AE/AR.
    enhanced_ack: Literal["application", "commit", "original"] = "application"

    @field_validator("default_charset")
    @classmethod
    def _known_charset(cls, value: str) -> str:
        from pamfr.hl7.charset import UnknownCharset, codec_for

        try:
            codec_for(value)
        except UnknownCharset:
            raise ValueError(
                f"{value!r} is not one of 8859/1, 8859/15, UNICODE UTF-8, ASCII"
            ) from None
        return value


class FiledropSettings(_Section):
    dirs: list[str] = []
    quiet_period: float = Field(2.0, ge=0)
    # A file whose content is not complete (empty, no MSH segment, no final segment terminator,
    # a batch without its BTS/FTS trailers or with wrong counts) waits this long unchanged,
    # then error/. A file written and never closed has the polling rules after this long.
    incomplete_timeout: float = Field(300.0, gt=0)
    # A file larger than this (by stat, before any read) goes to error/ unread.
    max_file_size: int = Field(64 * 1024 * 1024, ge=1024)
    # Where inotify works, a file that appears is taken only after its writer closed it
    # (IN_CLOSE_WRITE); false: the folders are polled only.
    close_events: bool = True
    poll_interval: float = Field(1.0, gt=0)
    temp_suffixes: list[str] = [".tmp", ".part", ".filepart"]
    order: Literal["name", "mtime"] = "name"
    done_dir: str = "done"
    error_dir: str = "error"


def split_listen(value: str) -> tuple[str, int]:
    """Split "HOST:PORT" (IPv6: "[::1]:8090") into (host, port); ValueError says what is wrong."""
    host, sep, port = value.strip().rpartition(":")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT (for example 127.0.0.1:8090), got {value!r}")
    return host, int(port)


TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
TOKEN_MIN_LENGTH = 16


class HttpSettings(_TlsListener):
    # "HOST:PORT" of the HTTP port (/healthz, /readyz, /metrics, /fhir); empty: no HTTP port.
    listen: str = ""
    # Seconds the database has to answer a readiness check or a scrape's identity counts.
    check_timeout: float = Field(2.0, gt=0)
    # The FHIR read API of the stored identities under /fhir (patient data): off by default.
    fhir: bool = False
    # Read-only bearer tokens of the data routes (/fhir), by name: {name = token}. Empty: no
    # token asked (loopback only). The name is logged, never the token.
    tokens: dict[str, str] = {}
    # TLS of the HTTP port (PEM files); with tls_client_ca, a client certificate signed by it
    # is required. A listen address other than the loopback needs TLS and tokens (or the CA).
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    # The address products use to reach this port (scheme://host[:port][/prefix]), for FHIR
    # fullUrl and paging links and the accepted Host headers. Empty: the listen address.
    public_url: str = ""
    # /fhir and /events without a token, on a loopback listen address only (every local
    # process may then read patient data): set on purpose, a WARNING says so at start.
    anonymous_loopback: bool = False
    # /readyz and /metrics (no patient data) off the loopback without TLS: set on purpose.
    health_without_tls: bool = False
    # Requests handled at once (more get 503), and seconds a client has to send a request's
    # headers once connected or answered (a half-sent request is closed).
    max_concurrency: int = Field(64, ge=1)
    header_timeout: float = Field(10.0, gt=0)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value.strip():
            split_listen(value)
        return value.strip()

    @field_validator("tokens")
    @classmethod
    def _named_tokens(cls, value: dict[str, str]) -> dict[str, str]:
        seen: set[str] = set()
        for name, token in value.items():
            if not TOKEN_NAME.fullmatch(name):
                raise ValueError(
                    f"token name {name!r}: letters, digits, '_', '.', '-' (64 at most)"
                )
            token = token.strip()
            if len(token) < TOKEN_MIN_LENGTH or any(c.isspace() for c in token):
                raise ValueError(
                    f"token {name!r}: at least {TOKEN_MIN_LENGTH} characters, no spaces "
                    "(for example: openssl rand -hex 32)"
                )
            if token in seen:
                raise ValueError(f"token {name!r}: the same token under two names")
            seen.add(token)
        return {name: token.strip() for name, token in value.items()}



class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"  # json: one object a line, for a log collector


class DeskSettings(_Section):
    # The identity-vigilance desk under /desk on the HTTP port (docs/desk.md): off by default.
    enabled: bool = False
    # Names of [http] tokens that may reprocess messages and record doublon decisions; every
    # other token reads.
    operators: list[str] = []
    # Minutes without a request after which a desk session must sign in again.
    idle_minutes: float = Field(30.0, gt=0)
    # Signs the session cookies (32 characters at least); unset: a new one at each start,
    # which signs everyone out when pamfr restarts.
    secret: str | None = Field(None, min_length=32)
    # The worklist of provisional identities lists those older than this many days.
    provisional_days: int = Field(30, ge=0)


class RetentionSettings(_Section):
    # Days after which the raw bytes of a message (any outcome) are emptied by `pamfr purge`
    # (and by the daemon, once a day); the log row, its ACK and the history stay. None: keep.
    raw_messages_days: int | None = Field(None, ge=1)
    # Days after which the history of a patient merged into another one (its last change that
    # old) is deleted by `pamfr purge` and the daemon's daily pass. None: kept for ever.
    merged_history_days: int | None = Field(None, ge=1)


WEBHOOK_SECRET_MIN = 32  # bytes
_SUBSCRIBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class WebhookSettings(_Section):
    """One subscriber of the change feed: the events are POSTed to `url`, one at a time, in
    order, each signed with `secret` (HMAC-SHA256 of "<timestamp>.<body>")."""

    name: str  # the cursor's key in the store, a label of /metrics: keep it stable
    url: str
    secret: str | None = None
    secret_env: str | None = None  # the environment variable holding the secret, instead
    events: list[str] | str = ["*"]  # event types, or "*" for all
    include_resource: bool = False  # the patient's FHIR resource in the body (when built in)
    timeout: float = Field(10.0, gt=0)  # seconds a POST may take, all of it
    park_after: int = Field(10, ge=1)  # consecutive failures before deliveries stop

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _SUBSCRIBER_NAME.fullmatch(value):
            raise ValueError(
                f"expected letters, digits, '.', '_' or '-' (64 at most), got {value!r}"
            )
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"https?://[^/\s]+", value.strip()):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.strip()

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str] | str) -> list[str]:
        from pamfr.identity.changefeed import EVENT_TYPES

        wanted = [value] if isinstance(value, str) else list(value)
        if not wanted:
            raise ValueError('no event type: give a list of types, or "*"')
        for name in wanted:
            if name != "*" and name not in EVENT_TYPES:
                raise ValueError(f"unknown event type {name!r} (one of {', '.join(EVENT_TYPES)})")
        return ["*"] if "*" in wanted else wanted

    @model_validator(mode="after")
    def _secret(self) -> WebhookSettings:
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("give one of secret or secret_env")
        if self.secret_env is not None and _RESOLVE_SECRETS.get():
            found = os.environ.get(self.secret_env)
            if not found:
                raise ValueError(
                    f"secret_env: the environment variable {self.secret_env} is not set"
                )
            self.secret = found
        resolved = self.secret_env is None or _RESOLVE_SECRETS.get()
        if resolved and len((self.secret or "").encode()) < WEBHOOK_SECRET_MIN:
            raise ValueError(
                f"the secret must be at least {WEBHOOK_SECRET_MIN} bytes "
                "(for example: openssl rand -hex 32)"
            )
        return self

    @model_validator(mode="after")
    def _plain_http_stays_local(self) -> WebhookSettings:
        from urllib.parse import urlsplit

        from pamfr.transport.access import is_loopback

        parts = urlsplit(self.url)
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            raise ValueError(
                f"url: http:// only to the loopback (events hold identifiers): use https:// "
                f"for {parts.hostname}"
            )
        return self

    def wants(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events


class FeedSettings(_Section):
    # Seconds between two looks at the store when a subscriber has nothing to receive.
    poll_interval: float = Field(1.0, gt=0)
    # After a failed delivery, wait retry_initial seconds, doubling up to retry_max.
    retry_initial: float = Field(1.0, gt=0)
    retry_max: float = Field(300.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAMFR_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        env_ignore_empty=True,  # PAMFR_X="" is unset, as PAMFR_CONFIG="" is
        extra="forbid",
    )

    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    receiver: ReceiverSettings = ReceiverSettings()
    hl7: Hl7Settings = Hl7Settings()
    filedrop: FiledropSettings = FiledropSettings()
    http: HttpSettings = HttpSettings()
    log: LogSettings = LogSettings()
    retention: RetentionSettings = RetentionSettings()
    desk: DeskSettings = DeskSettings()
    feed: FeedSettings = FeedSettings()
    webhooks: list[WebhookSettings] = []

    @model_validator(mode="before")
    @classmethod
    def _older_log_section(cls, data: Any) -> Any:
        # [logging] was the section's first name; configurations written for it keep working.
        # A key given under [log] (or by a flag or PAMFR_LOG_*) wins over the same key there.
        if isinstance(data, dict) and isinstance(data.get("logging"), dict):
            data = {**data, "log": {**data["logging"], **data.get("log", {})}}
            del data["logging"]
        return data

    @model_validator(mode="after")
    def _operators_are_tokens(self) -> Settings:
        for name in self.desk.operators:
            if name not in self.http.tokens:
                raise ValueError(f"desk.operators: {name!r} is not the name of an [http] token")
        return self

    @field_validator("webhooks")
    @classmethod
    def _unique_names(cls, value: list[WebhookSettings]) -> list[WebhookSettings]:
        names = [w.name for w in value]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two webhooks named {name!r}")
        return value

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
# False while the settings of a command that only reads are loaded: it signs nothing, so a
# webhook's secret_env need not be set in its environment.
_RESOLVE_SECRETS: ContextVar[bool] = ContextVar("resolve_secrets", default=True)


class ConfigError(Exception):
    pass


def _deep_set(target: dict[str, Any], dotted: str, value: Any) -> None:
    section, key = dotted.split(".", 1)
    target.setdefault(section, {})[key] = value


def load_settings(
    config_file: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    *,
    secrets: bool = True,
) -> Settings:
    """Load the settings; `overrides` maps "section.key" to a CLI value (None = not given).
    `secrets=False` (the commands that only read): a webhook's secret_env is not looked up."""
    global _CONFIG_FILE
    path = config_file or os.environ.get("PAMFR_CONFIG")
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"configuration file not found: {path}")
    _CONFIG_FILE = Path(path) if path else None
    renamed = sorted(n for n in os.environ if n.upper().startswith("PAMFR_LOGGING_"))
    if renamed:
        raise ConfigError(
            f"{renamed[0]}: the [logging] section is now [log]: "
            f"use PAMFR_LOG_{renamed[0][len('PAMFR_LOGGING_') :].upper()}"
        )
    init: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _deep_set(init, dotted, value)
    resolving = _RESOLVE_SECRETS.set(secrets)
    try:
        settings = Settings(**init)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid configuration ({path or 'command line and environment'}): {_explain(exc)}"
        ) from None
    except ValueError as exc:  # a TOML syntax error
        raise ConfigError(f"invalid configuration ({path}): {exc}") from None
    finally:
        _RESOLVE_SECRETS.reset(resolving)
    if path and "database" not in init and not os.environ.get("PAMFR_DATABASE_URL"):
        # the file's own URL: a relative SQLite path is read from the file's folder
        settings.database.url = relative_to(settings.database.url, Path(path).resolve().parent)
    return settings


def _explain(exc: ValidationError) -> str:
    """One line per error, naming the key: "server.allowed_peers: invalid peer address ..."."""
    lines = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(part) for part in error["loc"]) or "configuration"
        text = error["msg"].removeprefix("Value error, ")
        lines.append(f"{key}: {text}")
    return "; ".join(lines)
