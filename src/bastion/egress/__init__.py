"""Egress: the one outbound HTTP path, for what Bastion fetches itself and for its upstreams (SSRF protection).

Public API (the implementation modules are private to the package)::

    EgressGuard(allow=..., ca_file=..., resolver=..., max_redirects=3, on_refusal=...)
        .fetch(url, max_bytes=..., timeout_s=..., purpose=...) -> FetchResult   every hop checked, body capped
        .send(method, url, ...) / .check(url, ...) / .checked_addresses(host, port, ...)
    FetchResult(url, status, headers, body)                           the last hop's response
    Refusal(url, reason, hop, purpose)                                what ``on_refusal`` is told
    audit_refusals(audit_log) -> on_refusal hook                      one audit record per refusal
    AllowList.parse(["10.0.0.0/8", "idp.internal:8443"])              private on purpose
    classify(address) -> reason | None                                RFC 6890 special-purpose addresses
    parse_host("0x7f.1") -> IPv4Address("127.0.0.1")                  URL host -> IP literal or None

Refusals raise ``bastion.errors.EgressDenied`` (403); failed fetches raise
``bastion.errors.UpstreamUnavailable`` (503).
"""

from bastion.egress.addresses import classify, parse_host
from bastion.egress.allowlist import AllowList
from bastion.egress.auditing import audit_refusals
from bastion.egress.client import EgressGuard, FetchResult
from bastion.egress.refusals import Refusal

__all__ = [
    "AllowList",
    "EgressGuard",
    "FetchResult",
    "Refusal",
    "audit_refusals",
    "classify",
    "parse_host",
]
