"""conf/pamfr.toml is the documented example: it loads, and what it shows is the default."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from pamfr.service.config import ConfigError, Settings, load_settings

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
    }


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("hl7.default_charset", "EBCDIC", "hl7.default_charset"),
        ("hl7.reused_control_id", "ignore", "hl7.reused_control_id"),
    ],
)
def test_a_bad_hl7_value_names_its_key(key, value, named):
    with pytest.raises(ConfigError, match=named):
        load_settings(None, {key: value})
