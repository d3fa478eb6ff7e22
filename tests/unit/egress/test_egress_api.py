"""The public API of ``bastion.egress`` is pinned, and its refusal error sits in the one exception tree."""

from __future__ import annotations

import bastion.egress
import bastion.errors
from bastion.errors import BastionError, EgressDenied


def test_exported_members() -> None:
    assert sorted(bastion.egress.__all__) == [
        "AllowList", "EgressGuard", "FetchResult", "Refusal", "audit_refusals", "classify",
        "parse_host",
    ]  # fmt: skip
    for name in bastion.egress.__all__:
        member = getattr(bastion.egress, name)
        assert member.__doc__, name


def test_egress_denied_is_a_bastion_error_with_its_codes() -> None:
    assert issubclass(EgressDenied, BastionError)
    assert (EgressDenied.status, EgressDenied.jsonrpc_code, EgressDenied.code) == (403, -32003, "egress_denied")
    assert "EgressDenied" in bastion.errors.__all__
    assert "EgressDenied" in (bastion.errors.__doc__ or "")
