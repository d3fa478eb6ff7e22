"""``principal.idp`` names: each names one source of identities, and Bastion's own are reserved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.config import parse_config
from bastion.errors import ConfigError

CORP = {"name": "corp", "issuer": "https://login.example.com", "client_id": "bastion"}


def external(name: str | None, issuer: str = "https://ci.example.com") -> dict[str, Any]:
    entry = {"issuer": issuer, "jwks_url": f"{issuer}/jwks", "audience": "bastion", "routes": ["notes"]}
    return entry if name is None else {**entry, "name": name}


def config(tmp_path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    policy = tmp_path / "p.cedar"
    policy.write_text('@id("p") permit (principal, action, resource);\n', encoding="utf-8")
    route = {"name": "notes", "http": {"url": "https://notes.example.com/mcp"}}
    return {"policy": {"files": [str(policy)]}, "routes": [route], "identity": identity}


def test_providers_and_external_issuers_with_distinct_names_are_accepted(tmp_path: Path) -> None:
    identity = {
        "authorization_server": {"identity_providers": [CORP]},
        "external_issuers": [external("ci"), external(None, "https://other.example.com")],
    }
    parsed = parse_config(config(tmp_path, identity), base_dir=tmp_path)
    assert [item.idp for item in parsed.identity.external_issuers] == ["ci", "https://other.example.com"]


@pytest.mark.parametrize(
    "identity",
    [
        pytest.param({"authorization_server": {"identity_providers": [{**CORP, "name": "bastion"}]}}, id="provider"),
        pytest.param({"external_issuers": [external("bastion")]}, id="external-bastion"),
        pytest.param({"external_issuers": [external("local")]}, id="external-local"),
        pytest.param(
            {"authorization_server": {"identity_providers": [CORP]}, "external_issuers": [external("corp")]},
            id="external-named-like-a-provider",
        ),
        pytest.param(
            {"external_issuers": [external("ci"), external("ci", "https://other.example.com")]},
            id="two-external-issuers-one-name",
        ),
    ],
)
def test_a_name_that_would_make_two_sources_one_idp_is_refused(tmp_path: Path, identity: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config(tmp_path, identity), base_dir=tmp_path)
    message = caught.value.message
    assert message.startswith("<config>: identity"), message
    assert "names must be unique and not 'local'" in message or "is already an identity provider's" in message
