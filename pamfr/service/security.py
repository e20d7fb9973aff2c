"""The listener's security settings made real: its TLS context and its peer filter.

Errors name the configuration key at fault, so an operator knows what to fix
(`server.tls_key: cannot read /etc/pamfr/key.pem: Permission denied`).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pamfr.settings.config import HttpSettings, ServerSettings
from pamfr.transport.access import PeerFilter, is_loopback, server_tls_context

_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PRIVATE_KEY = b"PRIVATE KEY-----"


class SecurityConfigError(Exception):
    pass


def _read_pem(key: str, path: str, marker: bytes, what: str) -> None:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SecurityConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    if marker not in data:
        raise SecurityConfigError(f"{key}: {path} holds no PEM {what}")


def listener_tls(
    server: ServerSettings | HttpSettings, section: str = "server"
) -> ssl.SSLContext | None:
    """The TLS context of the listener ([server], or [http] with section="http"), None for
    plain TCP; SecurityConfigError when a file is missing, unreadable or does not match."""
    if not server.tls_cert or not server.tls_key:
        return None
    _read_pem(f"{section}.tls_cert", server.tls_cert, _CERTIFICATE, "certificate")
    _read_pem(f"{section}.tls_key", server.tls_key, _PRIVATE_KEY, "private key")
    if b"ENCRYPTED" in Path(server.tls_key).read_bytes():
        # OpenSSL would ask for the pass phrase on a terminal the daemon does not have.
        raise SecurityConfigError(
            f"{section}.tls_key: {server.tls_key} is encrypted; give an unencrypted key "
            "readable by the pamfr user only"
        )
    if server.tls_client_ca:
        ca_key = f"{section}.tls_client_ca"
        _read_pem(ca_key, server.tls_client_ca, _CERTIFICATE, "CA certificate")
        try:
            ssl.create_default_context(cafile=server.tls_client_ca)
        except ssl.SSLError as exc:
            raise SecurityConfigError(
                f"{ca_key}: cannot load {server.tls_client_ca}: {exc}"
            ) from None
    try:
        return server_tls_context(server.tls_cert, server.tls_key, server.tls_client_ca)
    except ssl.SSLError as exc:
        raise SecurityConfigError(
            f"{section}.tls_cert / {section}.tls_key: {server.tls_cert} and {server.tls_key} "
            f"do not load as a certificate and its private key: {exc}"
        ) from None


def mllp_refusal(s: ServerSettings) -> str | None:
    """Why the MLLP listener may not open as configured (one line), or None: off the
    loopback, someone must say who may send identities."""
    if is_loopback(s.host) or s.allowed_peers or s.tls_client_ca or s.allow_any_peer:
        return None
    return (
        f"server.host {s.host} is not the loopback: say who may send, with "
        "server.allowed_peers or client certificates (server.tls_client_ca), or "
        "server.allow_any_peer = true on purpose"
    )


def peer_filter(server: ServerSettings) -> PeerFilter:
    return PeerFilter.parse(server.allowed_peers)


def describe_access(server: ServerSettings, tls: ssl.SSLContext | None) -> str:
    """One line for the start-up log: transport, peers, senders (no patient data)."""
    if tls is None:
        transport = "plain TCP"
    elif server.tls_client_ca:
        transport = "TLS, client certificate required"
    else:
        transport = "TLS"
    peers = ", ".join(server.allowed_peers) or "any"
    senders = ", ".join(server.allowed_senders) or "any"
    return f"{transport}; peers allowed: {peers}; senders allowed: {senders}"
