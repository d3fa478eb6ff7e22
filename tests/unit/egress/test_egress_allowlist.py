"""The allow list: parsed from configuration strings, matched on address, host and port (sans-IO)."""

from __future__ import annotations

import ipaddress

import pytest

from bastion.egress import AllowList
from bastion.errors import ConfigError

ALLOW = AllowList.parse(["10.0.0.0/8", "127.0.0.1", "fd00::/8", "idp.internal", "jwks.internal:8443", "[::1]:9000"])

# (host, address, port, permitted)
CASES = [
    ("anything.example", "10.20.30.40", 443, True),
    ("anything.example", "11.0.0.1", 443, False),
    ("127.0.0.1", "127.0.0.1", 1234, True),
    ("localhost", "127.0.0.1", 443, True),
    ("localhost", "127.0.0.2", 443, False),
    ("anything.example", "::ffff:10.1.2.3", 443, True),  # IPv4-mapped: matched as the IPv4 address
    ("anything.example", "fd12::1", 443, True),
    ("idp.internal", "192.168.1.1", 443, True),
    ("idp.internal", "192.168.1.1", 8080, True),
    ("IDP.internal", "192.168.1.1", 443, True),
    ("jwks.internal", "192.168.1.1", 8443, True),
    ("jwks.internal", "192.168.1.1", 443, False),
    ("other.internal", "192.168.1.1", 443, False),
    ("::1", "::1", 9000, True),
    ("::1", "::1", 9001, False),
]


@pytest.mark.parametrize(("host", "address", "port", "permitted"), CASES)
def test_permits(host: str, address: str, port: int, permitted: bool) -> None:
    assert ALLOW.permits(host, ipaddress.ip_address(address), port) is permitted


def test_the_empty_allow_list_permits_nothing() -> None:
    assert not AllowList().permits("localhost", ipaddress.ip_address("127.0.0.1"), 443)
    assert AllowList.parse([]) == AllowList()


def test_parse_keeps_networks_and_hosts_apart() -> None:
    allow = AllowList.parse(["192.168.0.0/16", "::1", "svc.internal:8443", "127.0.0.1:8000"])
    assert allow.networks == (ipaddress.ip_network("192.168.0.0/16"), ipaddress.ip_network("::1/128"))
    assert allow.hosts == frozenset({("svc.internal", 8443), ("127.0.0.1", 8000)})


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("10.0.0.1/8", "has host bits set"),
        ("10.0.0.0/33", "10.0.0.0/33"),
        ("svc.internal:0", "bad port"),
        ("svc.internal:65536", "bad port"),
        ("svc.internal:", "bad port"),
        ("svc.internal:https", "bad port"),
        ("[::1]x", "bad port"),
        ("[::1", "not a valid IPv6 address"),
        ("exa mple", "not a valid host name"),
        ("", "not a valid host name"),
    ],
)
def test_bad_entries_are_a_config_error_naming_the_entry(entry: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as caught:
        AllowList.parse(["10.0.0.0/8", entry])
    assert repr(entry) in caught.value.message
