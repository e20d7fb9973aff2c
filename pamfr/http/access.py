"""Who may read what on the HTTP port.

Deny by default: every route needs `Authorization: Bearer <one of the tokens>` except
OPEN_PATHS (/healthz, /readyz, /metrics and /fhir/metadata, which carry no patient data) and
the mounts of OWN_SIGN_IN (the desk, which signs its users in with the same tokens), so a
route added later is closed unless opened here on purpose. Without tokens every other
request gets 401, unless `[http] anonymous_loopback` lets the loopback in on purpose.

The Host header must name this port (allowed_hosts, checked by Starlette's
TrustedHostMiddleware): a page of another site that a browser on this host loads cannot read
the port through DNS rebinding. A listen address other than the loopback needs TLS and a way
to tell the client (tokens, or client certificates): check_exposure says why a set-up is
refused.

Each guarded request is logged with its method, its first two path segments (never the
rest, nor the query string), its status and the token's name, never the token.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pamfr.fhir.rest import operation_outcome
from pamfr.transport.access import is_loopback

__all__ = [
    "OPEN_PATHS",
    "OWN_SIGN_IN",
    "AccessGuard",
    "allowed_hosts",
    "check_exposure",
    "is_loopback",
]

log = logging.getLogger("pamfr.http.access")

OPEN_PATHS: frozenset[str] = frozenset({"/healthz", "/readyz", "/metrics", "/fhir/metadata"})
# Mounts that sign their users in themselves (the desk: a session cookie after a sign-in with
# a token, pamfr/desk/session.py); a bearer token is not asked of them.
OWN_SIGN_IN: tuple[str, ...] = ("/desk",)
FHIR_JSON = "application/fhir+json"
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_WILDCARDS = ("0.0.0.0", "::")


def check_exposure(
    host: str, *, tls: bool, tokens: Mapping[str, str], client_ca: bool, key: str = "http"
) -> str | None:
    """Why listening on `host` this way is refused (one line), or None when it is fine."""
    if is_loopback(host):
        return None
    missing = []
    if not tls:
        missing.append(f"TLS ({key}.tls_cert and {key}.tls_key)")
    if not tokens and not client_ca:
        missing.append(f"tokens ({key}.tokens) or client certificates ({key}.tls_client_ca)")
    if not missing:
        return None
    return (
        f"{key}.listen {host} is not the loopback: patient data off this host needs "
        + " and ".join(missing)
    )


def public_host(public_url: str) -> str:
    """The host of `[http] public_url` as a Host header names it; ValueError when the URL
    is not scheme://host[:port][/prefix]."""
    parts = urlsplit(public_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"http.public_url: expected http(s)://host[:port][/prefix], got {public_url!r}"
        )
    host = parts.hostname.lower()
    return f"[{host}]" if ":" in host else host


def allowed_hosts(listen_host: str, public_url: str = "") -> list[str]:
    """The Host header values this port answers: its listen address, the loopback names when
    it listens on the loopback (or on every address), and the host of the public URL."""
    hosts: list[str] = []
    if is_loopback(listen_host) or listen_host in _WILDCARDS:
        hosts += _LOOPBACK_NAMES
    if listen_host not in _WILDCARDS:
        hosts.append(f"[{listen_host}]" if ":" in listen_host else listen_host.lower())
    if public_url:
        hosts.append(public_host(public_url))
    return list(dict.fromkeys(hosts))


def _shown(path: str) -> str:
    """The first two segments of a path (/fhir/Patient): never an id or what follows."""
    return "/" + "/".join(path.strip("/").split("/")[:2])


class AccessGuard:
    """ASGI middleware: bearer tokens on every path but OPEN_PATHS. With `anonymous`, a
    loopback client without an Authorization header is let in. The token's name, for the
    routes that want it, is in scope["pamfr.token"] (None when let in without one)."""

    def __init__(
        self, app: ASGIApp, tokens: Mapping[str, str] | None = None, anonymous: bool = False
    ) -> None:
        self.app = app
        self.tokens = [(name, token.encode()) for name, token in (tokens or {}).items()]
        self.anonymous = anonymous

    def _who(self, scope: Scope) -> tuple[bool, str | None]:
        """(an Authorization header was sent, the name of the valid token presented)."""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, credential = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    return True, None
                credential = credential.strip()
                found = None
                for token_name, token in self.tokens:  # every one compared: no timing hint
                    if hmac.compare_digest(credential, token):
                        found = token_name
                return True, found
        return False, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or path in OPEN_PATHS
            or any(path == p or path.startswith(p + "/") for p in OWN_SIGN_IN)
        ):
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("-", 0)
        sent, name = self._who(scope)
        if name is None and not (self.anonymous and not sent and is_loopback(client[0])):
            log.warning(
                "http %s %s -> 401 from %s: no valid bearer token",
                scope["method"],
                _shown(scope["path"]),
                client[0],
            )
            await _unauthorized(send)
            return
        scope["pamfr.token"] = name
        status = {"code": 0}

        async def send_noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, receive, send_noting)
        log.info(
            "http %s %s -> %d from %s (token %s)",
            scope["method"],
            _shown(scope["path"]),
            status["code"],
            client[0],
            name or "none: anonymous loopback",
        )


async def _unauthorized(send: Send) -> None:
    body = json.dumps(
        operation_outcome("login", "a valid 'Authorization: Bearer <token>' header is required")
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", f"{FHIR_JSON}; charset=utf-8".encode()),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="pamfr"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
