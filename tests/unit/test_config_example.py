"""conf/pamfr.toml is the documented example: it loads, and what it shows is the default."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from pamfr.settings.config import ConfigError, Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "conf" / "pamfr.toml"


def test_the_example_shows_the_defaults(monkeypatch):
    for name in [n for n in os.environ if n.startswith("PAMFR_")]:
        monkeypatch.delenv(name)
    shown = tomllib.loads(EXAMPLE.read_text())
    loaded = load_settings(EXAMPLE)
    defaults = Settings()
    for section, values in shown.items():
        for key, value in values.items():
            assert getattr(getattr(loaded, section), key) == value, f"{section}.{key}"
            assert getattr(getattr(defaults, section), key) == value, f"{section}.{key}"
    assert shown["hl7"] == {
        "default_charset": "8859/15",
        "iti31_updates_identity": False,
        "reused_control_id": "refuse",
        "enhanced_ack": "application",
    }


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("hl7.default_charset", "EBCDIC", "hl7.default_charset"),
        ("hl7.reused_control_id", "ignore", "hl7.reused_control_id"),
        ("hl7.enhanced_ack", "both", "hl7.enhanced_ack"),
    ],
)
def test_a_bad_hl7_value_names_its_key(key, value, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(None, {key: value})


def test_the_log_section_and_its_older_name(tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith("PAMFR_")]:
        monkeypatch.delenv(name)
    current = tmp_path / "log.toml"
    current.write_text('[log]\nformat = "json"\nlevel = "warning"\n')
    log = load_settings(current).log
    assert (log.format, log.level) == ("json", "warning")
    older = tmp_path / "logging.toml"
    older.write_text('[logging]\nformat = "json"\n')
    assert load_settings(older).log.format == "json"
    both = tmp_path / "both.toml"
    both.write_text('[log]\nformat = "text"\n[logging]\nformat = "json"\nlevel = "debug"\n')
    assert (load_settings(both).log.format, load_settings(both).log.level) == ("text", "debug")
    monkeypatch.setenv("PAMFR_LOG_FORMAT", "json")
    assert load_settings(None).log.format == "json"
    # A flag given on the command line wins over the file, whichever name the file uses.
    assert load_settings(older, {"log.format": "text"}).log.format == "text"


def test_the_older_log_environment_names_are_refused_with_the_new_name(monkeypatch):
    for name in [n for n in os.environ if n.startswith("PAMFR_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PAMFR_LOGGING_FORMAT", "json")
    with pytest.raises(ConfigError, match="PAMFR_LOGGING_FORMAT: .* use PAMFR_LOG_FORMAT"):
        load_settings(None)
