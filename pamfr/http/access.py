"""Who may read patient data on the HTTP port.

The data routes (GUARDED_PREFIXES: /fhir, and /events beside it) pass AccessGuard: when
tokens are configured, a request without `Authorization: Bearer <one of them>` gets 401 and
an OperationOutcome, never data. /healthz, /readyz and /metrics carry no patient data and
are not guarded. A listen address other than the loopback needs TLS and a way to tell the
client (tokens, or client certificates): check_exposure says why a set-up is refused.

Each guarded request is logged with its method, its first two path segments (never the
rest, nor the query string), its status and the token's name, never the token.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pamfr.fhir.rest import operation_outcome

log = logging.getLogger("pamfr.http.access")

GUARDED_PREFIXES: tuple[str, ...] = ("/fhir", "/events")
FHIR_JSON = "application/fhir+json"


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


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


def _guarded(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in GUARDED_PREFIXES)


def _shown(path: str) -> str:
    """The first two segments of a path (/fhir/Patient): never an id or what follows."""
    return "/" + "/".join(path.strip("/").split("/")[:2])


class AccessGuard:
    """ASGI middleware: bearer tokens on GUARDED_PREFIXES. The token's name, for the routes
    that want it, is in scope["pamfr.token"] (None when no token is asked)."""

    def __init__(self, app: ASGIApp, tokens: Mapping[str, str] | None = None) -> None:
        self.app = app
        self.tokens = [(name, token.encode()) for name, token in (tokens or {}).items()]

    def _who(self, scope: Scope) -> str | None:
        """The name of the token presented, or None."""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, credential = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    return None
                credential = credential.strip()
                found = None
                for token_name, token in self.tokens:  # every one compared: no timing hint
                    if hmac.compare_digest(credential, token):
                        found = token_name
                return found
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _guarded(scope["path"]):
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("-", 0)
        name = None
        if self.tokens:
            name = self._who(scope)
            if name is None:
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
            name or "none asked",
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
