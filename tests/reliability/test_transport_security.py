"""MLLP over TLS, mutual TLS, and settings checked at start.

The test makes its own CA, server certificate (127.0.0.1) and client certificates, plus a
second CA whose client certificate must not get in.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from pamfr.hl7.samples import Person, message
from pamfr.transport.access import client_tls_context
from pamfr.transport.client import MLLPError
from tests.helpers import parse_ack, run_cli, start_daemon, stored_outcomes
from tests.reliability.common import connect
from tests.reliability.pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _write(folder: Path, name: str, control_id: str) -> Path:
    path = folder / name
    path.write_text(message("A28", Person(ipp=f"P{control_id}"), control_id))
    return path


def _tls_env(pki: Pki, mutual: bool = False) -> dict[str, str]:
    env = {
        "PAMFR_SERVER_TLS_CERT": str(pki.server.cert),
        "PAMFR_SERVER_TLS_KEY": str(pki.server.key),
    }
    if mutual:
        env["PAMFR_SERVER_TLS_CLIENT_CA"] = str(pki.ca)
    return env


async def _try_send(port: int, raw: bytes, tls: ssl.SSLContext | None) -> str:
    """The ACK code, or the name of the error that stopped the exchange."""
    try:
        client = await connect(port, tls=tls)
    except (OSError, TimeoutError) as exc:
        return f"connect failed: {type(exc).__name__}: {exc}"
    try:
        return parse_ack(await client.send(raw, timeout=10)).code
    except (MLLPError, OSError) as exc:
        return f"no answer: {type(exc).__name__}: {exc}"
    finally:
        await client.close()


def test_mllp_over_tls(sqlite_url, tmp_path, pki):
    daemon = start_daemon(sqlite_url, tmp_path / "serve.log", env=_tls_env(pki))
    target = f"127.0.0.1:{daemon.port}"
    try:
        assert "access: TLS;" in daemon.log()
        one = _write(tmp_path, "one.hl7", "TLS-1")
        sent = run_cli("send", str(one), "--to", target, "--tls", "--tls-ca", str(pki.ca))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "#1: AA" in sent.stdout

        folder = tmp_path / "replay"
        folder.mkdir()
        _write(folder, "a.hl7", "TLS-2")
        _write(folder, "b.hl7", "TLS-3")
        replayed = run_cli("replay", str(folder), "--to", target, "--tls-ca", str(pki.ca))
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert "ACK codes: AA 2" in replayed.stdout

        # A plaintext client gets no ACK: its bytes are not a TLS handshake.
        plain = _write(tmp_path, "plain.hl7", "PLAIN-1")
        refused = run_cli("send", str(plain), "--to", target, "--timeout", "10")
        assert refused.returncode == 1
        assert "AA" not in refused.stdout and "no ACK" in refused.stderr
        outcome = asyncio.run(_try_send(daemon.port, plain.read_bytes(), None))
        assert outcome.startswith("no answer"), outcome

        # The server's certificate is checked: without our CA the client refuses it.
        unknown = run_cli("send", str(plain), "--to", target, "--tls", "--timeout", "10")
        assert unknown.returncode == 2  # no connection, nothing sent
        assert "CERTIFICATE_VERIFY_FAILED" in unknown.stderr and "nothing sent" in unknown.stderr
    finally:
        daemon.signal(15)
        assert daemon.proc.wait(30) == 0
        daemon.kill_group()
    assert stored_outcomes(sqlite_url) == [("TLS-1", "AA"), ("TLS-2", "AA"), ("TLS-3", "AA")]


def test_mutual_tls_requires_a_certificate_from_the_configured_ca(sqlite_url, tmp_path, pki):
    daemon = start_daemon(sqlite_url, tmp_path / "serve.log", env=_tls_env(pki, mutual=True))
    raw = message("A28", Person(ipp="PMTLS"), "MTLS-X").encode()
    try:
        assert "access: TLS, client certificate required;" in daemon.log()
        no_cert = client_tls_context(str(pki.ca))
        rogue = client_tls_context(
            str(pki.ca), str(pki.rogue_client.cert), str(pki.rogue_client.key)
        )
        # With TLS 1.2 the client sees the refusal in the handshake itself (in 1.3, right after).
        rogue_12 = client_tls_context(
            str(pki.ca), str(pki.rogue_client.cert), str(pki.rogue_client.key)
        )
        rogue_12.maximum_version = ssl.TLSVersion.TLSv1_2
        outcomes = {
            name: asyncio.run(_try_send(daemon.port, raw, context))
            for name, context in (("no cert", no_cert), ("rogue", rogue), ("rogue 1.2", rogue_12))
        }
        for name, outcome in outcomes.items():
            assert outcome.startswith(("no answer", "connect failed")), (name, outcome)
        assert outcomes["rogue 1.2"].startswith("connect failed"), outcomes
        # None of them reached the MLLP layer: no connection was ever opened there.
        assert "opened" not in daemon.log()

        good = tmp_path / "good.hl7"
        good.write_bytes(raw)
        sent = run_cli(
            "send",
            str(good),
            "--to",
            f"127.0.0.1:{daemon.port}",
            "--tls-ca",
            str(pki.ca),
            "--tls-cert",
            str(pki.client.cert),
            "--tls-key",
            str(pki.client.key),
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "#1: AA" in sent.stdout
        assert daemon.log().count("opened") == 1
    finally:
        daemon.signal(15)
        assert daemon.proc.wait(30) == 0
        daemon.kill_group()
    assert stored_outcomes(sqlite_url) == [("MTLS-X", "AA")]


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"PAMFR_SERVER_ALLOWED_PEERS": '["10.0.0.0/33"]'}, "server.allowed_peers"),
        ({"PAMFR_SERVER_ALLOWED_SENDERS": '["A|B|C"]'}, "server.allowed_senders"),
        (
            {"PAMFR_SERVER_TLS_CERT": "{missing}", "PAMFR_SERVER_TLS_KEY": "{key}"},
            "server.tls_cert",
        ),
        (
            {"PAMFR_SERVER_TLS_CERT": "{cert}", "PAMFR_SERVER_TLS_KEY": "{missing}"},
            "server.tls_key",
        ),
        ({"PAMFR_SERVER_TLS_CERT": "{cert}", "PAMFR_SERVER_TLS_KEY": "{other_key}"}, "tls_key"),
        ({"PAMFR_SERVER_TLS_CERT": "{key}", "PAMFR_SERVER_TLS_KEY": "{key}"}, "server.tls_cert"),
        (
            {
                "PAMFR_SERVER_TLS_CERT": "{cert}",
                "PAMFR_SERVER_TLS_KEY": "{key}",
                "PAMFR_SERVER_TLS_CLIENT_CA": "{missing}",
            },
            "server.tls_client_ca",
        ),
        ({"PAMFR_SERVER_TLS_CLIENT_CA": "{cert}"}, "tls_client_ca"),
        ({"PAMFR_SERVER_ALLOWED_PEER": '["10.0.0.0/8"]'}, "allowed_peer"),
    ],
)
def test_bad_security_settings_stop_the_start(sqlite_url, tmp_path, pki, setting, named):
    files = {
        "missing": str(tmp_path / "nowhere.pem"),
        "cert": str(pki.server.cert),
        "key": str(pki.server.key),
        "other_key": str(pki.client.key),
    }
    env = {k: v.format(**files) for k, v in setting.items()}
    result = run_cli("serve", "--port", "0", "--db", sqlite_url, env=env, timeout=60)
    assert result.returncode != 0
    assert named in result.stderr, result.stderr
    assert "listening" not in result.stderr
