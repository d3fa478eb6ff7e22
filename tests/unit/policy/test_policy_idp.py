"""``principal.idp`` end to end inside the process: the ``bastion_idp`` claim of a real token,
verified into a ``Principal``, becomes the Cedar entity's ``idp``; ``principal.issuer`` is the
token's ``iss``. Tokens are minted and verified with the real ``TokenIssuer`` / ``TokenVerifier``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from policy_helpers import tool

import bastion.demo
from bastion.identity import RevocationList, SigningKeys, TokenIssuer, TokenVerifier
from bastion.policy import PolicyEngine, ResourceRef
from bastion.policy.model import principal_entity
from bastion.principal import Principal

ISSUER = "https://bastion.example"
ROUTE = "https://bastion.example/mcp/notes"
DEMO_POLICY = Path(bastion.demo.__file__).parent / "demo.cedar"
CORP_ONLY = """
@id("corp-people") permit (principal, action == Action::"tools/call", resource)
when { principal.idp == "corp" };
@id("bastion-tokens-read") permit (principal, action == Action::"tools/call", resource)
when { principal.issuer == "https://bastion.example" && resource.risk == "read" };
"""


class Tokens:
    """Bastion's issuer and verifier on fresh keys."""

    def __init__(self, data_dir: Path, revocations: RevocationList) -> None:
        self.keys = SigningKeys.load_or_create(data_dir, verify_window_s=3600)
        self.issuer = TokenIssuer(self.keys, ISSUER, 3600)
        self.verifier = TokenVerifier(issuer=ISSUER, keys=self.keys, revocations=revocations)

    def principal(self, **mint: Any) -> Principal:
        """The verified principal of a token minted with ``mint`` (sub alice, engineering)."""
        minted = self.issuer.mint(sub="alice", audience=ROUTE, ttl_s=60, groups=["engineering"], **mint)
        return self.verifier.verify(minted.token, ROUTE)

    def legacy_principal(self) -> Principal:
        """A token as Bastion minted them before the ``bastion_idp`` claim existed."""
        now = int(time.time())
        claims = {
            "iss": ISSUER, "sub": "alice", "aud": ROUTE, "iat": now, "nbf": now, "exp": now + 60,
            "jti": "0" * 32, "client_id": "bastion-cli", "groups": ["engineering"], "bastion_kind": "User",
        }  # fmt: skip
        key = self.keys.current
        token = jwt.encode({"typ": "at+jwt", "alg": "ES256", "kid": key.kid}, claims, key.private_key)
        return self.verifier.verify(token, ROUTE)


@pytest.fixture
def tokens(tmp_path: Path) -> Iterator[Tokens]:
    with RevocationList(tmp_path / "bastion.db") as revocations:
        yield Tokens(tmp_path / "keys", revocations)


@pytest.mark.parametrize(
    ("mint", "idp"),
    [
        pytest.param({"idp": "corp"}, "corp", id="corp"),
        pytest.param({"idp": "local"}, "local", id="users-file"),
        pytest.param({"kind": "ServiceAccount"}, "bastion", id="service-account"),
    ],
)
def test_the_claim_is_the_entitys_idp_and_the_issuer_its_own_attribute(
    tokens: Tokens, mint: dict[str, Any], idp: str
) -> None:
    entity = principal_entity(tokens.principal(**mint))
    assert (entity["attrs"]["idp"], entity["attrs"]["issuer"]) == (idp, ISSUER)


def test_a_policy_on_the_idp_tells_providers_apart(tokens: Tokens, engine_for: Callable[[str], PolicyEngine]) -> None:
    engine = engine_for(CORP_ONLY)
    write_tool = tool("append_note", destructiveHint=False)
    corp = engine.decide(tokens.principal(idp="corp"), "tools/call", write_tool, {})
    assert (corp.effect, corp.policy_ids) == ("allow", ("corp-people",))
    for other in ({"idp": "partner"}, {"idp": "local"}, {}):
        assert not engine.decide(tokens.principal(**other), "tools/call", write_tool, {}).allowed, other
    # before this change principal.idp was the issuer for everyone, so this permitted nobody:
    assert not engine.decide(tokens.legacy_principal(), "tools/call", write_tool, {}).allowed
    # the issuer is still there for policies that mean "any token Bastion issued"
    read = engine.decide(tokens.principal(idp="partner"), "tools/call", tool("search", readOnlyHint=True), {})
    assert (read.effect, read.policy_ids) == ("allow", ("bastion-tokens-read",))


def test_a_token_without_the_claim_gets_its_issuer_as_idp(tokens: Tokens) -> None:
    principal = tokens.legacy_principal()
    assert (principal.idp, principal.issuer) == (ISSUER, ISSUER)
    assert principal_entity(principal)["attrs"]["idp"] == ISSUER


def test_the_demo_policy_keeps_the_partners_people_to_searching() -> None:
    engine = PolicyEngine.load([DEMO_POLICY])
    notes_delete = ResourceRef.from_tool("notes", {"name": "delete_note"})
    search = ResourceRef.from_tool("notes", {"name": "search_notes"}, risk="read")

    def person(idp: str) -> Principal:
        return Principal("User", f"{idp}:dana", ISSUER, "bastion_jwt", 0, groups=("engineering",), idp=idp)

    assert engine.decide(person("corp"), "tools/call", notes_delete, {}).allowed
    denied = engine.decide(person("partner"), "tools/call", notes_delete, {})
    assert (denied.effect, denied.policy_ids) == ("deny", ("partner-search-only",))
    assert engine.decide(person("partner"), "tools/call", search, {}).allowed
