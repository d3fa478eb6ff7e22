"""A hop's URL checked and taken apart (sans-IO)."""

from __future__ import annotations

import ipaddress

import pytest

from bastion.egress.target import Target, parse_target, shown_url
from bastion.errors import EgressDenied


def test_a_url_is_taken_apart_and_normalised() -> None:
    target = parse_target("HTTPS://Client.Example.:8443/meta data.json?v=1#frag", allow_http=False)
    assert target == Target("https", "client.example", None, 8443, "/meta data.json?v=1")
    assert target.authority == "client.example:8443"
    assert target.url == "https://client.example:8443/meta data.json?v=1"
    assert target.shown == "https://client.example:8443/meta data.json"


def test_an_ip_literal_in_any_encoding_becomes_the_address() -> None:
    target = parse_target("https://0x7f.1/", allow_http=False)
    assert (target.host, target.address, target.port, target.authority) == (
        "127.0.0.1",
        ipaddress.ip_address("127.0.0.1"),
        443,
        "127.0.0.1",
    )


def test_the_connection_url_names_the_checked_address_and_keeps_the_port_and_path() -> None:
    target = parse_target("http://example.com/a?b=c", allow_http=True)
    assert target.authority == "example.com"
    assert target.connect_url(ipaddress.ip_address("93.184.215.14")) == "http://93.184.215.14:80/a?b=c"
    assert target.connect_url(ipaddress.ip_address("2606:2800::1")) == "http://[2606:2800::1]:80/a?b=c"
    v6 = parse_target("https://[2606:2800::1]:8443", allow_http=False)
    assert (v6.authority, v6.path) == ("[2606:2800::1]:8443", "/")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://example.com/x", "URL scheme 'ftp' for example.com is not allowed"),
        ("file:///etc/passwd", "URL has no host"),
        ("gopher://127.0.0.1:6379/_", "URL scheme 'gopher'"),
        ("http://example.com/", "URL scheme 'http' for example.com is not allowed"),
        ("https://user:pw@example.com/", "URL for example.com carries user info"),
        ("https://user@example.com/", "carries user info"),
        ("https:///x", "URL has no host"),
        ("https://example.com:0/", "port 0 of example.com"),
        ("https://example.com:99999/", "URL is not valid"),
        ("https://example.com:x/", "URL is not valid"),
        ("https://[::1/", "URL is not valid"),
        ("https://[fe80::1%25eth0]/", "zone id"),
        ("https://%31%32%37.0.0.1/", "percent-encoded"),
        ("https://1.2.3.4.5/", "not a valid IPv4 address"),
        ("https://evil.example\\.good.example/", "not a valid host name"),
        ("//example.com/x", "URL scheme ''"),
    ],
)
def test_refused_urls(url: str, fragment: str) -> None:
    with pytest.raises(EgressDenied, match=fragment.replace("[", r"\[")) as caught:
        parse_target(url, allow_http=False)
    assert "pw" not in caught.value.message


def test_shown_url_drops_user_info_query_and_fragment() -> None:
    assert shown_url("https://user:pw@example.com:8443/cb?code=secret#x") == "https://example.com:8443/cb"
    assert shown_url("https://[::1/") == "an unreadable URL"
