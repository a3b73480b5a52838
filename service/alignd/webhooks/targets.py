"""Where a webhook may be sent: only to public addresses, unless an admin allows a host or network.

A URL's host is resolved, and every address it gives must be public: not loopback, link-local (cloud
metadata lives at 169.254.169.254), private, shared (CGNAT), multicast, reserved or unspecified, also
when written as an IPv4-mapped or otherwise IPv4-embedding IPv6 address. `localhost` and `*.localhost`
are refused without asking DNS. The check runs at registration, to say why at once, and again before
every attempt, which then connects to the very address it checked (`Target.address`): a name that is
re-pointed at an internal address after registration (DNS rebinding) is refused, not followed.

ALIGND_WEBHOOK_ALLOWED_HOSTS names exceptions: a host name listed there may resolve anywhere, and an
address inside a listed network is allowed whatever name led to it.
"""

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from alignd.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[IPAddress]]
"""(host, port) -> the addresses a connection could go to; raises OSError when the name does not resolve."""

ALLOW_SETTING = "ALIGND_WEBHOOK_ALLOWED_HOSTS"
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class ForbiddenTarget(ValueError):
    """The URL leads to an address webhooks may not reach; the message says which and why."""


class UnresolvedTarget(OSError):
    """The URL's host name does not resolve (now)."""


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The addresses the operating system's resolver gives for `host`, in its order, without repeats."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped, 6to4, NAT64), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def forbidden_kind(address: IPAddress) -> str | None:
    """What kind of non-public address `address` is ("loopback", "link-local", ...), None if public."""
    inner = embedded_ipv4(address)
    if inner is not None:
        return forbidden_kind(inner)
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-public", not address.is_global),
    )
    return next((kind for kind, matches in checks if matches), None)


@dataclass(frozen=True)
class Target:
    """Where one request goes: the URL's host and port, and the checked address to connect to."""

    host: str
    port: int
    address: IPAddress


@dataclass(frozen=True)
class TargetPolicy:
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()
    resolver: Resolver = field(default=system_resolver, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings, resolver: Resolver = system_resolver) -> "TargetPolicy":
        return cls.from_entries(settings.webhook_allowed_hosts, resolver)

    @classmethod
    def from_entries(cls, entries: Sequence[str], resolver: Resolver = system_resolver) -> "TargetPolicy":
        """Entries as the setting holds them: lower-case host names and networks."""
        hosts, networks = set(), []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry)
        return cls(frozenset(hosts), tuple(networks), resolver)

    def resolve(self, url: str) -> Target:
        """The address to connect to for `url` (a URL `service.check_url` accepted).

        Raises ForbiddenTarget when the host is, or resolves to, an address webhooks may not reach (any
        one of its addresses is enough), UnresolvedTarget when the name does not resolve.
        """
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if host in self.allowed_hosts:
            return Target(host, port, self._lookup(host, port)[0])
        literal = _ip_literal(host)
        if literal is None and (host == "localhost" or host.endswith(".localhost")):
            raise ForbiddenTarget(f"url host {host!r} is loopback; {_ONLY_PUBLIC}")
        addresses = [literal] if literal is not None else self._lookup(host, port)
        for address in addresses:
            kind = None if self._allowed(address) else forbidden_kind(address)
            if kind is None:
                continue
            article = "an" if kind[0] in "aeiou" else "a"
            if literal is not None:
                raise ForbiddenTarget(f"url host {host} is {article} {kind} address; {_ONLY_PUBLIC}")
            raise ForbiddenTarget(f"url host {host!r} resolves to {article} {kind} address; {_ONLY_PUBLIC}")
        return Target(host, port, addresses[0])

    def _lookup(self, host: str, port: int) -> list[IPAddress]:
        try:
            addresses = self.resolver(host, port)
        except OSError:
            addresses = []
        if not addresses:
            raise UnresolvedTarget(f"url host {host!r} does not resolve")
        return addresses

    def _allowed(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self.allowed_networks)


_ONLY_PUBLIC = f"webhooks may only reach public addresses (an admin can allow it with {ALLOW_SETTING})"


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
