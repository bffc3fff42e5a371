"""Is a user's LLM base URL safe for our workers to call? Only http(s) to public addresses, unless allow-listed.

Refused: other schemes, userinfo (`https://api.example@127.0.0.1`), query or fragment, control characters and
backslashes, every numeric IPv4 spelling that resolvers accept (`2130706433`, `0x7f.1`, `127.1`, `017700000001`),
IPv6 literals (mapped, 6to4, Teredo and NAT64 forms unwrapped), local names (`localhost`, `*.internal`,
`metadata`), and any name resolving to a non-public address (private, loopback, link-local, CGNAT, reserved,
multicast; all of them must be public). This is the save-time check; the worker checks again per connection
(DNS can change in between).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = (
    "MAX_URL_LENGTH",
    "AllowList",
    "Resolver",
    "UnsafeUrlError",
    "check_base_url",
    "is_public",
    "parse_ipv4_like",
    "system_resolver",
)

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_S = 3.0
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver: TypeAlias = Callable[[str], Awaitable[list[str]]]
"""Host name -> the addresses it resolves to (as strings); raises OSError when it does not resolve."""

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NUMERIC_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_LOCAL_NAMES = frozenset({"localhost", "metadata", "metadata.google.internal", "instance-data"})
_LOCAL_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa")


class UnsafeUrlError(ValueError):
    """Why a base URL is refused; the message is safe to show (it never echoes an upstream answer)."""

    def __init__(self, message: str, *, reason: str = "ssrf_blocked") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


_Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
_PORT_SUFFIX = re.compile(r"^(?P<host>.+?):(?P<port>[0-9]{1,5})$")


def _split_port(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]:port`, `10.0.0.0/8` -> (host, port or None)."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    match = _PORT_SUFFIX.match(entry)
    if match and ":" not in match.group("host"):  # a bare IPv6 address has colons of its own
        return match.group("host"), int(match.group("port"))
    return entry, None


@dataclass(frozen=True, slots=True)
class AllowList:
    """Operator exceptions: host names and IP networks (a bare address is a /32 or /128), each optionally limited to
    one port (`127.0.0.1:8089`): without a port, every port of the address is allowed (Redis on loopback too)."""

    hosts: frozenset[tuple[str, int | None]] = frozenset()
    networks: tuple[tuple[_Network, int | None], ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        hosts: set[tuple[str, int | None]] = set()
        networks: list[tuple[_Network, int | None]] = []
        for entry in (e.strip().lower() for e in entries):
            if not entry:
                continue
            host, port = _split_port(entry)
            try:
                networks.append((ipaddress.ip_network(host, strict=False), port))
            except ValueError:
                hosts.add((host.rstrip("."), port))
        return cls(frozenset(hosts), tuple(networks))

    def allows_ip(self, ip: IPAddress, port: int | None = None) -> bool:
        return any(ip.version == net.version and ip in net and only in (None, port) for net, only in self.networks)

    def allows_host(self, name: str, port: int | None = None) -> bool:
        return (name, None) in self.hosts or (name, port) in self.hosts


async def system_resolver(host: str) -> list[str]:
    """The system resolver, bounded in time."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(RESOLVE_TIMEOUT_S):
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """Globally routable unicast; an IPv6 address carrying an IPv4 one must carry a public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return is_public(inner)
        if ip.scope_id:
            return False
    return ip.is_global and not ip.is_multicast


def _ipv4_number(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    return int(part, 10)


def parse_ipv4_like(host: str) -> ipaddress.IPv4Address | None:
    """The address of a host written in any inet_aton form, None for a host name; refuses broken numeric forms."""
    parts = host.split(".")
    if parts and parts[-1] == "":
        parts = parts[:-1]
    if not parts or not _NUMERIC_PART.match(parts[-1]):
        return None  # a name (WHATWG: only a numeric last label makes it an address)
    if len(parts) > 4 or not all(_NUMERIC_PART.match(p) for p in parts):
        raise UnsafeUrlError("the host is a malformed IP address", reason="invalid_url")
    try:
        numbers = [_ipv4_number(p) for p in parts]
    except ValueError as exc:
        raise UnsafeUrlError("the host is a malformed IP address", reason="invalid_url") from exc
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise UnsafeUrlError("the host is a malformed IP address", reason="invalid_url")
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _split(raw: str) -> tuple[str, str, bool, int]:
    """(scheme, host, is an IPv6 literal, port) of a syntactically acceptable base URL."""
    if not raw or len(raw) > MAX_URL_LENGTH:
        raise UnsafeUrlError(f"the base URL must be 1..{MAX_URL_LENGTH} characters", reason="invalid_url")
    if any(ord(c) <= 0x20 or ord(c) >= 0x7F or c == "\\" for c in raw):
        raise UnsafeUrlError("the base URL has spaces, control, non-ASCII or backslash chars", reason="invalid_url")
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeUrlError("only http and https base URLs are allowed")
    if "@" in parts.netloc:
        raise UnsafeUrlError("a base URL may not carry user information")
    if parts.query or parts.fragment or raw.endswith(("?", "#")):
        raise UnsafeUrlError("a base URL may not carry a query or fragment", reason="invalid_url")
    try:
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeUrlError("the base URL's host or port is malformed", reason="invalid_url") from exc
    if not host:
        raise UnsafeUrlError("the base URL needs a host", reason="invalid_url")
    return scheme, host, parts.netloc.startswith("["), port


def _literal(host: str, bracketed: bool) -> IPAddress | None:
    if bracketed:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError as exc:  # zone ids (`%eth0`) included
            raise UnsafeUrlError("the host is a malformed IPv6 address", reason="invalid_url") from exc
    return parse_ipv4_like(host)


def _check_name(host: str) -> str:
    name = host.rstrip(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise UnsafeUrlError("the base URL's host name is malformed", reason="invalid_url")
    if name in _LOCAL_NAMES or name.endswith(_LOCAL_SUFFIXES):
        raise UnsafeUrlError("the base URL points to a local or metadata host")
    return name


async def check_base_url(raw: str, *, allow: AllowList, resolve: Resolver) -> str:
    """The URL (trimmed) when our workers may call it, else `UnsafeUrlError`."""
    url = raw.strip()
    _, host, bracketed, port = _split(url)
    literal = _literal(host, bracketed)
    if literal is not None:
        if not (allow.allows_ip(literal, port) or is_public(literal)):
            raise UnsafeUrlError("the base URL points to a private, loopback or reserved address")
        return url
    if allow.allows_host(host.rstrip("."), port):
        return url
    name = _check_name(host)
    try:
        addresses = [ipaddress.ip_address(a.split("%")[0]) for a in await resolve(name)]
    except (OSError, TimeoutError, ValueError) as exc:
        raise UnsafeUrlError("the base URL's host does not resolve", reason="unresolvable") from exc
    if not addresses:
        raise UnsafeUrlError("the base URL's host does not resolve", reason="unresolvable")
    for address in addresses:
        if not (allow.allows_ip(address, port) or is_public(address)):
            raise UnsafeUrlError("the base URL's host resolves to a private, loopback or reserved address")
    return url
