"""The base-URL check: every form RELIABILITY's scenario 48 lists, with an injected resolver (no network)."""

from __future__ import annotations

import ipaddress

import pytest

from api.planner.ssrf import AllowList, UnsafeUrlError, check_base_url, is_public, parse_ipv4_like

NAMES = {
    "api.openai.com": ["104.18.7.192", "2606:4700::6812:7c0"],
    "internal.example": ["10.0.0.1"],
    "rebound.example": ["93.184.216.34", "127.0.0.1"],
    "v6-loopback.example": ["::1"],
}


async def resolve(host: str) -> list[str]:
    if host not in NAMES:
        raise OSError("does not resolve")
    return NAMES[host]


REFUSED = [
    "http://127.0.0.1:6379",
    "http://localhost",
    "http://localhost.",
    "http://foo.localhost",
    "http://[::1]",
    "http://0.0.0.0",
    "http://0",
    "http://169.254.169.254/latest/meta-data",
    "http://metadata.google.internal",
    "http://metadata",
    "http://10.0.0.5",
    "http://172.16.0.1",
    "http://192.168.1.1",
    "http://100.64.0.1",
    "http://[::ffff:127.0.0.1]",
    "http://[::ffff:7f00:1]",
    "http://[2002:7f00:1::]",
    "http://[64:ff9b::a9fe:a9fe]",
    "http://[fe80::1]",
    "http://[fd00:ec2::254]",
    "http://2130706433",
    "http://0x7f000001",
    "http://0x7f.1",
    "http://127.1",
    "http://017700000001",
    "http://0177.0.0.1",
    "https://api.example@127.0.0.1",
    "https://user:pw@api.openai.com",
    "http://api.openai.com\\@127.0.0.1",
    "file:///etc/passwd",
    "gopher://x",
    "ftp://x",
    "javascript:alert(1)",
    "http://internal.example",
    "http://rebound.example",
    "http://v6-loopback.example",
    "http://nowhere.example",
    "http://224.0.0.1",
    "http://1.2.3.09",
    "http://foo.1",
    "https://api.openai.com/v1?x=1",
    "https://api.openai.com/v1#frag",
    "http://api.openai.com:99999",
    "http:// api.openai.com",
    "",
]


@pytest.mark.parametrize("url", REFUSED)
async def test_refused(url: str) -> None:
    with pytest.raises(UnsafeUrlError):
        await check_base_url(url, allow=AllowList(), resolve=resolve)


@pytest.mark.parametrize("url", ["https://api.openai.com/v1", "http://8.8.8.8:8080/v1", "HTTPS://API.OPENAI.COM"])
async def test_public_urls_are_accepted(url: str) -> None:
    assert await check_base_url(url, allow=AllowList(), resolve=resolve) == url


async def test_an_allow_list_entry_with_a_port_admits_that_port_only() -> None:
    allow = AllowList.parse(["127.0.0.1:8089", "[::1]:8089", "llm.internal:8000", "10.0.0.0/8:443"])

    for url in ("http://127.0.0.1:8089/v1", "http://[::1]:8089", "http://llm.internal:8000", "https://10.9.9.9"):
        assert await check_base_url(url, allow=allow, resolve=resolve) == url
    for url in (
        "http://127.0.0.1:6379",
        "http://127.0.0.1",
        "http://[::1]:6379",
        "http://llm.internal",
        "http://10.9.9.9",
    ):
        with pytest.raises(UnsafeUrlError):
            await check_base_url(url, allow=allow, resolve=resolve)


async def test_the_allow_list_admits_the_operators_exceptions_only() -> None:
    allow = AllowList.parse(["127.0.0.1", "10.0.0.0/8", "llm.internal"])

    assert await check_base_url("http://127.0.0.1:9999/v1", allow=allow, resolve=resolve)
    assert await check_base_url("http://internal.example/v1", allow=allow, resolve=resolve)  # resolves to 10.0.0.1
    assert await check_base_url("http://llm.internal:8000", allow=allow, resolve=resolve)
    for url in ("http://127.0.0.2", "http://192.168.1.1", "http://localhost"):
        with pytest.raises(UnsafeUrlError):
            await check_base_url(url, allow=allow, resolve=resolve)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("10.1.65535", "10.1.255.255"),
        ("192.168.1.1.", "192.168.1.1"),
        ("example.com", None),
    ],
)
def test_numeric_ipv4_spellings(host: str, expected: str | None) -> None:
    parsed = parse_ipv4_like(host)
    assert (str(parsed) if parsed else None) == expected


def test_public_means_globally_routable_unicast() -> None:
    assert is_public(ipaddress.ip_address("1.1.1.1"))
    assert not is_public(ipaddress.ip_address("::ffff:10.0.0.1"))
    assert not is_public(ipaddress.ip_address("ff02::1"))
