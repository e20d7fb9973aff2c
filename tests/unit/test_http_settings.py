"""[http] of the configuration: off by default, HOST:PORT checked, the environment wins."""

from __future__ import annotations

import pytest

from pamfr.settings.config import ConfigError, HttpSettings, load_settings, split_listen
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


def test_fhir_is_off_and_tokens_come_by_name(monkeypatch, tmp_path):
    assert HttpSettings().fhir is False and HttpSettings().tokens == {}
    conf = tmp_path / "pamfr.toml"
    conf.write_text('[http]\nfhir = true\n[http.tokens]\ndpi = "0123456789abcdef"\n')
    settings = load_settings(conf)
    assert (settings.http.fhir, settings.http.tokens) == (True, {"dpi": "0123456789abcdef"})
    # the environment adds tokens, or replaces one of the same name
    monkeypatch.setenv("PAMFR_HTTP_TOKENS", '{"lab": "fedcba9876543210"}')
    assert load_settings(conf).http.tokens == {
        "dpi": "0123456789abcdef",
        "lab": "fedcba9876543210",
    }
    monkeypatch.setenv("PAMFR_HTTP_TOKENS", '{"dpi": "a-new-one-0123456789"}')
    assert load_settings(conf).http.tokens == {"dpi": "a-new-one-0123456789"}


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ('{"dpi": "short"}', "token 'dpi': at least 16 characters"),
        ('{"a b": "0123456789abcdef"}', "token name 'a b'"),
        (
            '{"a": "0123456789abcdef", "b": "0123456789abcdef"}',
            "token 'b': the same token under two",
        ),
    ],
)
def test_weak_or_ambiguous_tokens_are_refused(monkeypatch, tokens, message):
    monkeypatch.setenv("PAMFR_HTTP_TOKENS", tokens)
    with pytest.raises(ConfigError, match=r"http\.tokens: " + message):
        load_settings()


def test_http_tls_files_come_in_pairs(monkeypatch):
    monkeypatch.setenv("PAMFR_HTTP_TLS_CERT", "/etc/pamfr/http.pem")
    with pytest.raises(ConfigError, match="tls_cert and tls_key must be given together"):
        load_settings()


@pytest.mark.parametrize(
    ("section", "means"), [("SERVER", "mutual TLS"), ("HTTP", "client certificates")]
)
def test_each_listener_refuses_a_client_ca_without_its_own_certificate(monkeypatch, section, means):
    monkeypatch.setenv(f"PAMFR_{section}_TLS_CLIENT_CA", "/etc/pamfr/ca.pem")
    with pytest.raises(ConfigError, match=rf"tls_client_ca \({means}\) needs tls_cert and tls_key"):
        load_settings()


@pytest.mark.parametrize("section", ["SERVER", "HTTP"])
def test_an_empty_tls_file_is_no_tls(monkeypatch, section):
    monkeypatch.setenv(f"PAMFR_{section}_TLS_CERT", "")
    settings = load_settings()
    assert getattr(settings, section.lower()).tls_cert is None


@pytest.mark.parametrize(
    ("host", "tls", "tokens", "ca", "refused"),
    [
        ("127.0.0.1", False, {}, False, None),
        ("::1", False, {}, False, None),
        ("localhost", False, {}, False, None),
        ("0.0.0.0", False, {"a": "t"}, False, "TLS (http.tls_cert and http.tls_key)"),
        ("10.0.0.5", True, {}, False, "tokens (http.tokens) or client certificates"),
        ("10.0.0.5", True, {"a": "t"}, False, None),
        ("pamfr.example", True, {}, True, None),
        ("::", False, {}, False, "TLS (http.tls_cert and http.tls_key) and tokens"),
    ],
)
def test_patient_data_off_the_loopback_needs_tls_and_a_known_client(host, tls, tokens, ca, refused):
    from pamfr.http.access import check_exposure

    found = check_exposure(host, tls=tls, tokens=tokens, client_ca=ca)
    if refused is None:
        assert found is None
    else:
        assert found is not None and refused in found and f"http.listen {host} " in found


def test_desk_operators_must_name_configured_tokens(monkeypatch):
    monkeypatch.setenv("PAMFR_HTTP_TOKENS", '{"alice": "alice-0123456789abcdef"}')
    assert load_settings(overrides={"desk.operators": ["alice"]}).desk.operators == ["alice"]
    with pytest.raises(ConfigError, match="desk.operators: 'bob' is not the name of an"):
        load_settings(overrides={"desk.operators": ["bob"]})
