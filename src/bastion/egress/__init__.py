"""Egress: the one outbound HTTP path for what Bastion fetches itself (SSRF protection).

Public API (the implementation modules are private to the package)::

    EgressGuard(allow=..., ca_file=..., resolver=..., max_redirects=3)
        .fetch(url, max_bytes=..., timeout_s=...) -> FetchResult     every hop checked, body capped
    FetchResult(url, status, headers, body)                           the last hop's response
    AllowList.parse(["10.0.0.0/8", "idp.internal:8443"])              private on purpose
    classify(address) -> reason | None                                RFC 6890 special-purpose addresses
    parse_host("0x7f.1") -> IPv4Address("127.0.0.1")                  URL host -> IP literal or None

Refusals raise ``bastion.errors.EgressDenied`` (403); failed fetches raise
``bastion.errors.UpstreamUnavailable`` (503).
"""

from bastion.egress.addresses import classify, parse_host
from bastion.egress.allowlist import AllowList
from bastion.egress.client import EgressGuard, FetchResult

__all__ = ["AllowList", "EgressGuard", "FetchResult", "classify", "parse_host"]
