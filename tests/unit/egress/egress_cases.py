"""Cases shared by the egress tests: IP literals in every encoding, and a resolver answering from a table."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from bastion.egress.addresses import IPAddress

#: (URL host, the address it stands for, the reason it is refused): every encoding an attacker might use.
IP_LITERALS = [
    ("127.0.0.1", "127.0.0.1", "loopback"),
    ("2130706433", "127.0.0.1", "loopback"),
    ("0177.0.0.1", "127.0.0.1", "loopback"),
    ("017700000001", "127.0.0.1", "loopback"),
    ("0x7f.0.0.1", "127.0.0.1", "loopback"),
    ("0x7f000001", "127.0.0.1", "loopback"),
    ("0X7F.1", "127.0.0.1", "loopback"),
    ("127.1", "127.0.0.1", "loopback"),
    ("127.0.0.1.", "127.0.0.1", "loopback"),
    ("\uff11\uff12\uff17.\uff10.\uff10.\uff11", "127.0.0.1", "loopback"),  # fullwidth digits: IDNA maps them
    ("10.1.1", "10.1.0.1", "private"),
    ("169.254.169.254", "169.254.169.254", "cloud metadata"),
    ("2852039166", "169.254.169.254", "cloud metadata"),
    ("0251.0376.0251.0376", "169.254.169.254", "cloud metadata"),
    ("0xa9fea9fe", "169.254.169.254", "cloud metadata"),
    ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254", "cloud metadata"),
    ("169.254.43518", "169.254.169.254", "cloud metadata"),
    ("100.100.100.200", "100.100.100.200", "cloud metadata"),
    ("169.254.170.2", "169.254.170.2", "cloud metadata"),
    ("0.0.0.0", "0.0.0.0", "unspecified"),  # noqa: S104 (a host to refuse, nothing binds)
    ("0", "0.0.0.0", "unspecified"),  # noqa: S104
    ("[::]", "::", "unspecified"),
    ("[::1]", "::1", "loopback"),
    ("::1", "::1", "loopback"),
    ("[0:0:0:0:0:0:0:1]", "::1", "loopback"),
    ("[::ffff:127.0.0.1]", "::ffff:7f00:1", "loopback"),
    ("[::ffff:7f00:1]", "::ffff:7f00:1", "loopback"),
    ("[::FFFF:169.254.169.254]", "::ffff:a9fe:a9fe", "cloud metadata"),
    ("[64:ff9b::a9fe:a9fe]", "64:ff9b::a9fe:a9fe", "cloud metadata"),
    ("[64:ff9b::10.0.0.1]", "64:ff9b::a00:1", "private"),
    ("[64:ff9b:1::7f00:1]", "64:ff9b:1::7f00:1", "loopback"),
    ("[::ffff:0:a9fe:a9fe]", "::ffff:0:a9fe:a9fe", "cloud metadata"),  # IPv4-translated
    ("[::127.0.0.1]", "::7f00:1", "loopback"),  # IPv4-compatible
    ("[2002:a9fe:a9fe::1]", "2002:a9fe:a9fe::1", "cloud metadata"),  # 6to4
    ("[2001:0:4136:e378:8000:63bf:80ff:fffe]", "2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo
    ("[fd00:ec2::254]", "fd00:ec2::254", "cloud metadata"),
    ("[fe80::1]", "fe80::1", "link-local"),
    ("[fec0::1]", "fec0::1", "site-local"),
    ("[fd12:3456::1]", "fd12:3456::1", "unique local"),
    ("[ff02::1]", "ff02::1", "multicast"),
    ("[2001:db8::1]", "2001:db8::1", "documentation"),
]


class StaticResolver:
    """A resolver answering from a table, recording each question; unknown names raise ``OSError``."""

    def __init__(self, answers: Mapping[str, list[str]]) -> None:
        self.answers = answers
        self.questions: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.questions.append((host, port))
        if host not in self.answers:
            raise OSError(f"{host} does not resolve")
        return [ipaddress.ip_address(text) for text in self.answers[host]]
