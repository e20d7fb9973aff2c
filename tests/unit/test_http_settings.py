"""[http] of the configuration: off by default, HOST:PORT checked, the environment wins."""

from __future__ import annotations

import pytest

from pamfr.service.config import ConfigError, HttpSettings, load_settings, split_listen
from tests.conftest import REPO


def test_the_example_configuration_states_the_defaults():
    assert load_settings(REPO / "conf" / "pamfr.toml").http == HttpSettings()
    assert HttpSettings().listen == ""  # no HTTP port unless asked for


def test_listen_is_host_and_port(monkeypatch):
    assert split_listen("127.0.0.1:8090") == ("127.0.0.1", 8090)
    assert split_listen("[::1]:8090") == ("::1", 8090)
    monkeypatch.setenv("PAMFR_HTTP_LISTEN", "0.0.0.0:9100")
    assert load_settings().http.listen == "0.0.0.0:9100"
    for bad in ("8090", "localhost", "127.0.0.1:http", "127.0.0.1:70000", ":8090"):
        monkeypatch.setenv("PAMFR_HTTP_LISTEN", bad)
        with pytest.raises(ConfigError, match=r"http\.listen: expected HOST:PORT"):
            load_settings()
