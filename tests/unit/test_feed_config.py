"""[[webhooks]] in the configuration: strict, each mistake named by its key."""

from __future__ import annotations

import pytest

from pamfr.service.config import ConfigError, load_settings


def load(tmp_path, text: str):
    path = tmp_path / "pamfr.toml"
    path.write_text(text)
    return load_settings(path)


HOOK = '[[webhooks]]\nname = "crm"\nurl = "https://crm.example.org/hook"\n'


def test_a_webhook_with_its_defaults(tmp_path):
    (hook,) = load(tmp_path, HOOK + 'secret = "s"\n').webhooks
    assert (hook.events, hook.include_resource, hook.park_after) == (["*"], False, 10)
    assert hook.wants("patient.merged")


def test_the_secret_may_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CRM_SECRET", "from-env")
    (hook,) = load(tmp_path, HOOK + 'secret_env = "CRM_SECRET"\n').webhooks
    assert hook.secret == "from-env"


def test_a_subscriber_takes_only_the_types_it_names(tmp_path):
    text = HOOK + 'secret = "s"\nevents = ["patient.merged", "ins.collision"]\n'
    (hook,) = load(tmp_path, text).webhooks
    assert hook.wants("ins.collision") and not hook.wants("patient.updated")


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ("", "webhooks.0: Value error, give one of secret or secret_env"),
        ('secret_env = "PAMFR_TEST_UNSET_SECRET"\n', "PAMFR_TEST_UNSET_SECRET is not set"),
        ('secret = "s"\nevents = ["patient.deleted"]\n', "unknown event type 'patient.deleted'"),
        ('secret = "s"\nurl2 = "x"\n', "webhooks.0.url2: Extra inputs are not permitted"),
        ('secret = "s"\n' + HOOK + 'secret = "t"\n', "two webhooks named 'crm'"),
    ],
)
def test_a_bad_webhook_is_refused_naming_its_key(tmp_path, extra, says):
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, HOOK + extra)
    assert says.removeprefix("webhooks.0: Value error, ") in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_a_url_must_be_http(tmp_path):
    with pytest.raises(ConfigError, match="webhooks.0.url: expected an http"):
        load(tmp_path, '[[webhooks]]\nname = "crm"\nurl = "ftp://x"\nsecret = "s"\n')
