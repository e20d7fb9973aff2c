"""[[webhooks]] in the configuration: strict, each mistake named by its key."""

from __future__ import annotations

import pytest

from pamfr.settings.config import ConfigError, load_settings


def load(tmp_path, text: str):
    path = tmp_path / "pamfr.toml"
    path.write_text(text)
    return load_settings(path)


S = "ssssssssssssssssssssssssssssssss"  # the shortest secret accepted: 32 bytes
HOOK = '[[webhooks]]\nname = "crm"\nurl = "https://crm.example.org/hook"\n'


def test_a_webhook_with_its_defaults(tmp_path):
    (hook,) = load(tmp_path, HOOK + f'secret = "{S}"\n').webhooks
    assert (hook.events, hook.include_resource, hook.park_after) == (["*"], False, 10)
    assert hook.wants("patient.merged")


def test_the_secret_may_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CRM_SECRET", "from-env-0123456789abcdef0123456789")
    (hook,) = load(tmp_path, HOOK + 'secret_env = "CRM_SECRET"\n').webhooks
    assert hook.secret == "from-env-0123456789abcdef0123456789"


def test_a_subscriber_takes_only_the_types_it_names(tmp_path):
    text = HOOK + f'secret = "{S}"\nevents = ["patient.merged", "ins.collision"]\n'
    (hook,) = load(tmp_path, text).webhooks
    assert hook.wants("ins.collision") and not hook.wants("patient.updated")


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ("", "webhooks.0: Value error, give one of secret or secret_env"),
        ('secret_env = "PAMFR_TEST_UNSET_SECRET"\n', "PAMFR_TEST_UNSET_SECRET is not set"),
        (
            f'secret = "{S}"\nevents = ["patient.deleted"]\n',
            "unknown event type 'patient.deleted'",
        ),
        (
            f'secret = "{S}"\nurl2 = "x"\n',
            "webhooks.0.url2: Extra inputs are not permitted",
        ),
        (
            f'secret = "{S}"\n' + HOOK + 'secret = "tttttttttttttttttttttttttttttttt"\n',
            "two webhooks named 'crm'",
        ),
    ],
)
def test_a_bad_webhook_is_refused_naming_its_key(tmp_path, extra, says):
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, HOOK + extra)
    assert says.removeprefix("webhooks.0: Value error, ") in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_a_url_must_be_http(tmp_path):
    with pytest.raises(ConfigError, match="webhooks.0.url: expected an http"):
        load(
            tmp_path,
            f'[[webhooks]]\nname = "crm"\nurl = "ftp://x"\nsecret = "{S}"\n',
        )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            HOOK + 'secret = "short-secret"\n',
            "webhooks.0: the secret must be at least 32 bytes (for example: openssl rand -hex 32)",
        ),
        (
            '[[webhooks]]\nname = "crm"\nurl = "http://crm.example.org/hook"\n'
            'secret = "' + "s" * 32 + '"\n',
            "webhooks.0: url: http:// only to the loopback (events hold identifiers): use "
            "https:// for crm.example.org",
        ),
    ],
)
def test_a_weak_secret_or_plain_http_off_the_host_is_refused(tmp_path, text, says):
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, text)
    assert says in str(refused.value) and "short-secret" not in str(refused.value)


def test_plain_http_to_the_loopback_is_accepted(tmp_path):
    for host in ("127.0.0.1:8080", "localhost", "[::1]:9000"):
        text = f'[[webhooks]]\nname = "crm"\nurl = "http://{host}/hook"\nsecret = "{"s" * 32}"\n'
        (hook,) = load(tmp_path, text).webhooks
        assert hook.url == f"http://{host}/hook"
