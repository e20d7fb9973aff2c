"""--tls, --tls-ca, --tls-cert, --tls-key: MLLP over TLS for `send` and `replay --to`."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import click

from pamfr.transport.access import client_tls_context

_FILE = click.Path(exists=True, dir_okay=False)


def tls_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the four options; the command receives them as tls, tls_ca, tls_cert, tls_key."""
    for option in reversed(
        (
            click.option(
                "--tls",
                is_flag=True,
                help="MLLP over TLS (implied by the other --tls-* options). The server "
                "certificate is checked against the system CAs, or --tls-ca.",
            ),
            click.option(
                "--tls-ca",
                type=_FILE,
                metavar="FILE",
                help="CA file (PEM) to verify the receiver's certificate.",
            ),
            click.option(
                "--tls-cert",
                type=_FILE,
                metavar="FILE",
                help="Client certificate (PEM) for a receiver that requires one (mutual TLS).",
            ),
            click.option(
                "--tls-key",
                type=_FILE,
                metavar="FILE",
                help="Private key of --tls-cert, when not in the same file.",
            ),
        )
    ):
        command = option(command)
    return command


def client_tls(
    tls: bool, ca: str | None, cert: str | None, key: str | None
) -> ssl.SSLContext | None:
    """The client TLS context the options ask for, None for plain TCP."""
    if key and not cert:
        raise click.UsageError("--tls-key needs --tls-cert")
    if not (tls or ca or cert):
        return None
    try:
        return client_tls_context(ca, cert, key)
    except ssl.SSLError as exc:
        raise click.ClickException(f"cannot load the TLS files: {exc}") from None
