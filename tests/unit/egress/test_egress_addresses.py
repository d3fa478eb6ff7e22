"""URL hosts in every encoding an attacker might use, and what each address is (sans-IO)."""

from __future__ import annotations

import ipaddress

import pytest
from egress_cases import IP_LITERALS

from bastion.egress import classify, parse_host
from bastion.egress.addresses import describe, normalise_host
from bastion.errors import EgressDenied

# (address, reason); None is a public unicast destination
ADDRESSES = [
    ("8.8.8.8", None),
    ("1.1.1.1", None),
    ("2606:4700:4700::1111", None),
    ("::ffff:8.8.8.8", None),
    ("64:ff9b::808:808", None),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("172.32.0.1", None),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("169.254.1.1", "link-local"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("0.1.2.3", "current-network"),
    ("192.0.0.8", "IETF protocol assignment"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("192.88.99.1", "6to4 relay anycast"),
    ("168.63.129.16", "cloud metadata"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:0:808:808", "IPv4-translated"),
    ("::808:808", "IPv4-compatible"),
    ("64:ff9b:1::808:808", "NAT64 local-use"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "documentation"),  # Teredo client 192.0.2.45
    ("2002:808:808::1", "6to4"),
    ("100::1", "discard-only"),
    ("2001:2::1", "benchmarking"),
    ("3fff::1", "documentation"),
    ("fc00::1", "unique local"),
    ("2001:10::1", "reserved"),  # ORCHID, caught by the not-global catch-all
]

# (URL host, a fragment of the refusal)
MALFORMED = [
    ("%31%32%37.0.0.1", "percent-encoded"),
    ("127.0.0.1%00", "percent-encoded"),
    ("[fe80::1%25eth0]", "zone id"),
    ("fe80::1%eth0", "zone id"),
    ("[127.0.0.1]", "not a valid IPv6 address"),
    ("[::1::2]", "not a valid IPv6 address"),
    ("1.2.3.4.5", "not a valid IPv4 address"),
    ("256.0.0.1", "not a valid IPv4 address"),
    ("4294967296", "not a valid IPv4 address"),
    ("0x", "not a valid IPv4 address"),
    ("08.0.0.1", "not a valid IPv4 address"),
    ("127.0.0.1 ", "not a valid host name"),
    ("127.0.0.1 evil.example", "not a valid host name"),
    ("exa mple.com", "not a valid host name"),
    ("a..b", "not a valid host name"),
    ("evil.example\\@good", "not a valid host name"),
    ("", "not a valid host name"),
    ("a" * 64 + ".example", "not a valid host name"),
]


@pytest.mark.parametrize(("host", "address", "reason"), IP_LITERALS)
def test_every_encoding_is_read_as_the_address_it_stands_for(host: str, address: str, reason: str) -> None:
    parsed = parse_host(host)
    assert parsed == ipaddress.ip_address(address)
    assert parsed is not None
    assert classify(parsed) == reason


@pytest.mark.parametrize(("address", "reason"), ADDRESSES)
def test_classify(address: str, reason: str | None) -> None:
    assert classify(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(("host", "fragment"), MALFORMED)
def test_malformed_hosts_are_refused(host: str, fragment: str) -> None:
    with pytest.raises(EgressDenied, match=fragment):
        parse_host(host)


@pytest.mark.parametrize(
    ("host", "normal"),
    [
        ("localhost", "localhost"),
        ("LOCALHOST.", "localhost"),
        ("Example.COM", "example.com"),
        ("münchen.example", "xn--mnchen-3ya.example"),
        ("_service.internal", "_service.internal"),
        ("0x7f.1", "127.0.0.1"),
        ("[::FFFF:7F00:1]", "::ffff:7f00:1"),
        ("0x7f.example", "0x7f.example"),  # the last label is not numeric: a name
    ],
)
def test_normalise_host(host: str, normal: str) -> None:
    assert normalise_host(host) == normal


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "example.com", "1e100.net", "0x7f.example", "a-1.b_2"])
def test_names_are_not_addresses(host: str) -> None:
    assert parse_host(host) is None


@pytest.mark.parametrize(
    ("reason", "phrase"),
    [
        ("loopback", "a loopback address"),
        ("unspecified", "an unspecified address"),
        ("IPv4-translated", "an IPv4-translated address"),
        ("unique local", "a unique local address"),
    ],
)
def test_describe(reason: str, phrase: str) -> None:
    assert describe(reason) == phrase
