"""Who may connect: an allow-list of peer networks (CIDR), and the TLS contexts."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


@dataclass(frozen=True, slots=True)
class PeerFilter:
    """Empty means every address may connect."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, cidrs: list[str] | tuple[str, ...]) -> PeerFilter:
        """Networks like "10.1.2.0/24" or single addresses; ValueError names a bad entry."""
        networks = []
        for cidr in cidrs:
            try:
                networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"invalid peer address or network {cidr!r}: {exc}") from None
        return cls(tuple(networks))

    def allows(self, host: str) -> bool:
        if not self.networks:
            return True
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


def server_tls_context(certfile: str, keyfile: str, client_ca: str | None = None) -> ssl.SSLContext:
    """TLS for the listener; with `client_ca`, mutual TLS: a client certificate signed by that
    CA is required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_tls_context(
    ca: str | None = None, certfile: str | None = None, keyfile: str | None = None
) -> ssl.SSLContext:
    """TLS for `send` / `replay --to`: verify the server with `ca`, present a certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    if certfile:
        context.load_cert_chain(certfile, keyfile)
    return context
