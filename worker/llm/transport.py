"""The LLM client's HTTP transport: connects only to allowed addresses, checked after DNS, at connect time.

An SSRF guard must look at the address actually dialed (a name may resolve to a public address when a URL is
saved and to 169.254.169.254 when it is used), so the check lives in the network backend of our own
connection pool: resolve, keep the allowed addresses, dial one of them (TLS still verifies the host name).
Redirects are not followed (the client is built with `follow_redirects=False`), and no proxy from the
environment is used, since a proxy would dial for us unchecked. The only importer of httpx2/httpcore2.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from typing import TYPE_CHECKING, Any

import httpcore2
import httpx2

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Iterator

__all__ = ("GuardedTransport", "NetworkPolicy", "SsrfBlockedError")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class SsrfBlockedError(httpx2.ConnectError):
    """The provider's host resolves only to addresses this worker may not reach (not public, not allowed).

    A `ConnectError`, so the SDK reports it as a connection error; the message never holds the address.
    """


class NetworkPolicy:
    """Which addresses the LLM client may dial: public ones, plus the networks the operator allows."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self._allowed = tuple(ipaddress.ip_network(n, strict=False) for n in allowed)

    def allows(self, address: IpAddress) -> bool:
        """True for a global unicast address, or one inside an allowed network."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(address in network for network in self._allowed):
            return True
        # `is_global` is False for loopback, private, link-local (cloud metadata), shared, reserved and
        # unspecified ranges; multicast can be global, so it is refused on its own.
        return address.is_global and not address.is_multicast


class _GuardedBackend(httpcore2.AsyncNetworkBackend):
    def __init__(self, policy: NetworkPolicy) -> None:
        self._policy = policy
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        async with asyncio.timeout(timeout):
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise httpcore2.ConnectError(f"cannot resolve the provider's host: {exc.strerror}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        allowed = [a for a in addresses if self._policy.allows(a)]
        if not allowed:
            raise SsrfBlockedError("the provider's address is not public and not in the allowed networks")
        for address in allowed[:-1]:
            with contextlib.suppress(httpcore2.ConnectError, httpcore2.ConnectTimeout):  # try the next one
                return await self._dial(address, port, timeout, local_address, socket_options)
        return await self._dial(allowed[-1], port, timeout, local_address, socket_options)

    async def _dial(
        self,
        address: IpAddress,
        port: int,
        timeout: float | None,  # noqa: ASYNC109 - passed on to httpcore
        local_address: str | None,
        socket_options: Iterable[Any] | None,
    ) -> httpcore2.AsyncNetworkStream:
        return await self._inner.connect_tcp(
            str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise SsrfBlockedError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


_ERRORS: tuple[tuple[type[Exception], type[httpx2.TransportError]], ...] = (
    (httpcore2.ConnectTimeout, httpx2.ConnectTimeout),
    (httpcore2.ReadTimeout, httpx2.ReadTimeout),
    (httpcore2.WriteTimeout, httpx2.WriteTimeout),
    (httpcore2.PoolTimeout, httpx2.PoolTimeout),
    (httpcore2.ConnectError, httpx2.ConnectError),
    (httpcore2.ReadError, httpx2.ReadError),
    (httpcore2.WriteError, httpx2.WriteError),
    (httpcore2.RemoteProtocolError, httpx2.RemoteProtocolError),
    (httpcore2.LocalProtocolError, httpx2.LocalProtocolError),
    (httpcore2.UnsupportedProtocol, httpx2.UnsupportedProtocol),
    (httpcore2.ProtocolError, httpx2.ProtocolError),
    (httpcore2.NetworkError, httpx2.NetworkError),
)
"""httpcore2 errors as the httpx2 ones the SDK classifies (timeouts vs connection errors)."""


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except SsrfBlockedError:
        raise
    except Exception as exc:
        for core, mapped in _ERRORS:
            if isinstance(exc, core):
                raise mapped(str(exc)) from exc
        raise


class _Body(httpx2.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        with _httpx_errors():
            await self._stream.aclose()


class GuardedTransport(httpx2.AsyncBaseTransport):
    """An HTTP/1.1 connection pool whose every connection passes the `NetworkPolicy`."""

    def __init__(
        self, policy: NetworkPolicy, *, max_connections: int, max_keepalive: int, keepalive_expiry_s: float = 30.0
    ) -> None:
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive,
            keepalive_expiry=keepalive_expiry_s,
            network_backend=_GuardedBackend(policy),
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        core_request = httpcore2.Request(
            method=request.method,
            url=httpcore2.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        return httpx2.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
