"""``GrantService``: the authorization_code and refresh_token grants and revocation, with a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from oauth_helpers import RFC7636_VERIFIER, FakeClock, jwt_claims, s256

from bastion.errors import OAuthError
from bastion.identity import RevocationList, SigningKeys, TokenIssuer
from bastion.oauth import SQLiteAuthorizationStore
from bastion.oauth.clients import Client
from bastion.oauth.grants import GrantService, IssuedTokens
from bastion.oauth.records import AuthorizationCode, Grant, UserIdentity, digest
from bastion.oauth.requests import Resources

ISSUER = "http://127.0.0.1:8123"
ECHO = ISSUER + "/mcp/echo"
OTHER = ISSUER + "/mcp/other"
REDIRECT = "http://127.0.0.1:5555/cb"
ACCESS_TTL = 900
REFRESH_TTL = 3600
GRACE = 5
ALICE = UserIdentity("alice", "local", "alice@example.com", "Alice", ("eng",))
CLI = Client("cli", "CLI", ("http://127.0.0.1/cb",), "registered", verified=True)
OTHER_CLIENT = Client("other-cli", "Other", ("http://127.0.0.1/cb",), "registered", verified=True)


@dataclass
class Grants:
    """The service under test and what the tests look at."""

    service: GrantService
    store: Any
    revocations: RevocationList
    clock: FakeClock

    async def put_code(
        self,
        code: str = "the-code",
        *,
        client_id: str = "cli",
        scopes: tuple[str, ...] = ("mcp",),
        resource: str = ECHO,
        route: str = "echo",
        verifier: str = RFC7636_VERIFIER,
        user: UserIdentity = ALICE,
    ) -> None:
        grant = Grant(client_id, route, resource, scopes, user)
        record = AuthorizationCode(grant, REDIRECT, s256(verifier), self.clock() + 60)
        await self.store.put_code(digest(code), record)

    async def redeem(self, client: Client = CLI, **params: str | None) -> IssuedTokens:
        defaults: dict[str, str | None] = {
            "code": "the-code",
            "redirect_uri": REDIRECT,
            "code_verifier": RFC7636_VERIFIER,
            "resource": ECHO,
        }
        merged = {k: v for k, v in {**defaults, **params}.items() if v is not None}
        return await self.service.authorization_code(client, merged)

    async def refresh(self, token: str, client: Client = CLI, /, **params: str) -> IssuedTokens:
        return await self.service.refresh_token(client, {"refresh_token": token, **params})


def make_grants(store: Any, tmp_path: Path, revocations: RevocationList, clock: FakeClock) -> GrantService:
    keys = SigningKeys.load_or_create(tmp_path, verify_window_s=3600)
    return GrantService(
        store,
        TokenIssuer(keys, ISSUER, 3600),
        revocations,
        Resources({ECHO: "echo", OTHER: "other"}),
        access_ttl_s=ACCESS_TTL,
        refresh_ttl_s=REFRESH_TTL,
        reuse_grace_s=GRACE,
        clock=clock,
    )


@pytest.fixture
async def grants(store: SQLiteAuthorizationStore, tmp_path: Path) -> AsyncIterator[Grants]:
    clock = FakeClock()
    with RevocationList(tmp_path / "bastion.db") as revocations:
        yield Grants(make_grants(store, tmp_path, revocations, clock), store, revocations, clock)


async def refused(call: Awaitable[Any]) -> str:
    with pytest.raises(OAuthError) as exc:
        await call
    return exc.value.error


def refresh_of(issued: IssuedTokens) -> str:
    return str(issued.body["refresh_token"])


# --- authorization_code ---------------------------------------------------------------------------


async def test_a_code_is_exchanged_for_tokens_for_its_route(grants: Grants) -> None:
    await grants.put_code()
    issued = await grants.redeem()
    body = dict(issued.body)
    assert sorted(body) == ["access_token", "expires_in", "refresh_token", "scope", "token_type"]
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", ACCESS_TTL, "mcp")
    claims = jwt_claims(body["access_token"])
    assert claims["aud"] == ECHO
    assert (claims["iss"], claims["sub"], claims["client_id"], claims["scope"]) == (ISSUER, "alice", "cli", "mcp")
    assert claims["exp"] == int(grants.clock()) + ACCESS_TTL
    assert claims["jti"] == issued.jti
    assert issued.grant == Grant("cli", "echo", ECHO, ("mcp",), ALICE)
    assert grants.revocations.is_revoked(issued.jti) is False


async def test_a_code_request_without_a_code_is_invalid_request(grants: Grants) -> None:
    assert await refused(grants.redeem(code=None)) == "invalid_request"
    assert await refused(grants.redeem(code="")) == "invalid_request"


async def test_an_unknown_code_is_invalid_grant(grants: Grants) -> None:
    await grants.put_code()
    assert await refused(grants.redeem(code="not-the-code")) == "invalid_grant"


async def test_a_code_expires_after_its_lifetime(grants: Grants) -> None:
    await grants.put_code("early")
    await grants.put_code("late")
    grants.clock.advance(59)
    await grants.redeem(code="early")
    grants.clock.advance(1)
    assert await refused(grants.redeem(code="late")) == "invalid_grant"


async def test_another_clients_code_is_invalid_grant(grants: Grants) -> None:
    await grants.put_code()
    assert await refused(grants.redeem(OTHER_CLIENT)) == "invalid_grant"


@pytest.mark.parametrize(
    "redirect_uri", [None, "", "http://127.0.0.1:5556/cb", "http://127.0.0.1/cb", "http://127.0.0.1:5555/cb/"]
)
async def test_a_redirect_uri_mismatch_is_invalid_grant(grants: Grants, redirect_uri: str | None) -> None:
    await grants.put_code()
    assert await refused(grants.redeem(redirect_uri=redirect_uri)) == "invalid_grant"


@pytest.mark.parametrize(
    "verifier", [None, "", RFC7636_VERIFIER[:-1] + "J", s256(RFC7636_VERIFIER), RFC7636_VERIFIER[:42]]
)
async def test_a_pkce_mismatch_is_invalid_grant(grants: Grants, verifier: str | None) -> None:
    await grants.put_code()
    assert await refused(grants.redeem(code_verifier=verifier)) == "invalid_grant"


@pytest.mark.parametrize("resource", [None, "", OTHER, ECHO + "/", ISSUER + "/mcp"])
async def test_a_resource_mismatch_is_invalid_target(grants: Grants, resource: str | None) -> None:
    await grants.put_code()
    assert await refused(grants.redeem(resource=resource)) == "invalid_target"


async def test_a_refused_redemption_still_uses_up_the_code(grants: Grants) -> None:
    await grants.put_code()
    assert await refused(grants.redeem(code_verifier=RFC7636_VERIFIER[:-1] + "J")) == "invalid_grant"
    assert await refused(grants.redeem()) == "invalid_grant"


async def test_a_replayed_code_revokes_every_token_it_issued(grants: Grants) -> None:
    await grants.put_code()
    first = await grants.redeem()
    grants.clock.advance(1)
    second = await grants.refresh(refresh_of(first))
    assert await refused(grants.redeem()) == "invalid_grant"
    assert grants.revocations.is_revoked(first.jti) is True
    assert grants.revocations.is_revoked(second.jti) is True
    assert await refused(grants.refresh(refresh_of(first))) == "invalid_grant"
    assert await refused(grants.refresh(refresh_of(second))) == "invalid_grant"


async def test_a_replayed_code_leaves_other_grants_alone(grants: Grants) -> None:
    await grants.put_code("one")
    await grants.put_code("two")
    one = await grants.redeem(code="one")
    two = await grants.redeem(code="two")
    assert await refused(grants.redeem(code="one")) == "invalid_grant"
    assert grants.revocations.is_revoked(one.jti) is True
    assert grants.revocations.is_revoked(two.jti) is False
    await grants.refresh(refresh_of(two))


class ReplayWhileRedeeming:
    """A store that lets a second redemption of the code run between ``redeem_code`` and ``create_family``."""

    def __init__(self, inner: SQLiteAuthorizationStore, replay: Callable[[], Awaitable[None]]) -> None:
        self._inner = inner
        self._replay = replay

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def create_family(self, *args: Any) -> None:
        await self._replay()
        await self._inner.create_family(*args)


async def test_a_replay_racing_the_first_redemption_still_revokes_its_tokens(
    store: SQLiteAuthorizationStore, tmp_path: Path
) -> None:
    clock = FakeClock()
    with RevocationList(tmp_path / "bastion.db") as revocations:
        replays: list[str] = []

        async def replay() -> None:
            replays.append(await refused(racing.redeem()))

        racing = Grants(
            make_grants(ReplayWhileRedeeming(store, replay), tmp_path, revocations, clock), store, revocations, clock
        )
        await racing.put_code()
        outcome: IssuedTokens | OAuthError
        try:
            outcome = await racing.redeem()
        except OAuthError as exc:
            outcome = exc
        assert replays == ["invalid_grant"]
        if isinstance(outcome, OAuthError):  # refusing the first redemption too is a correct outcome
            assert outcome.error == "invalid_grant"
        else:
            assert revocations.is_revoked(outcome.jti) is True
            assert await refused(racing.refresh(refresh_of(outcome))) == "invalid_grant"


# --- refresh_token --------------------------------------------------------------------------------


async def code_tokens(grants: Grants, scopes: tuple[str, ...] = ("mcp",)) -> IssuedTokens:
    await grants.put_code(scopes=scopes)
    return await grants.redeem()


async def test_a_refresh_token_is_rotated(grants: Grants) -> None:
    first = await code_tokens(grants)
    grants.clock.advance(10)
    second = await grants.refresh(refresh_of(first))
    assert refresh_of(second) != refresh_of(first)
    assert second.jti != first.jti
    assert second.body["scope"] == "mcp"
    claims = jwt_claims(str(second.body["access_token"]))
    assert (claims["aud"], claims["sub"], claims["iat"]) == (ECHO, "alice", int(grants.clock()))
    grants.clock.advance(10)
    third = await grants.refresh(refresh_of(second))
    assert refresh_of(third) not in (refresh_of(first), refresh_of(second))


@pytest.mark.parametrize("idp", ["corp", "local"])
async def test_the_sign_in_provider_is_in_every_access_token_refreshed_ones_included(
    grants: Grants, idp: str
) -> None:
    await grants.put_code(user=UserIdentity(f"{idp}:dana", idp, None, "Dana", ("eng",)))
    first = await grants.redeem()
    assert jwt_claims(str(first.body["access_token"]))["bastion_idp"] == idp
    grants.clock.advance(10)
    second = await grants.refresh(refresh_of(first))
    claims = jwt_claims(str(second.body["access_token"]))
    assert (claims["sub"], claims["bastion_idp"], claims["iss"]) == (f"{idp}:dana", idp, ISSUER)


async def test_a_refresh_request_without_a_token_is_invalid_request(grants: Grants) -> None:
    assert await refused(grants.service.refresh_token(CLI, {})) == "invalid_request"


async def test_an_unknown_refresh_token_is_invalid_grant(grants: Grants) -> None:
    assert await refused(grants.refresh("nope")) == "invalid_grant"


async def test_another_clients_refresh_token_is_invalid_grant(grants: Grants) -> None:
    first = await code_tokens(grants)
    assert await refused(grants.refresh(refresh_of(first), OTHER_CLIENT)) == "invalid_grant"


@pytest.mark.parametrize("after", [0, 1, GRACE])
async def test_a_reuse_within_the_grace_gets_tokens(grants: Grants, after: int) -> None:
    first = await code_tokens(grants)
    rotated = await grants.refresh(refresh_of(first))
    grants.clock.advance(after)
    duplicate = await grants.refresh(refresh_of(first))
    assert refresh_of(duplicate) != refresh_of(rotated)
    assert grants.revocations.is_revoked(first.jti) is False
    await grants.refresh(refresh_of(rotated))


async def test_a_reuse_after_the_grace_revokes_the_whole_family(grants: Grants) -> None:
    first = await code_tokens(grants)
    second = await grants.refresh(refresh_of(first))
    grants.clock.advance(GRACE + 1)
    third = await grants.refresh(refresh_of(second))
    grants.clock.advance(GRACE + 1)
    assert await refused(grants.refresh(refresh_of(first))) == "invalid_grant"
    for issued in (first, second, third):
        assert grants.revocations.is_revoked(issued.jti) is True
    assert await refused(grants.refresh(refresh_of(third))) == "invalid_grant", "the newest refresh token too"


async def test_scopes_can_be_narrowed_on_refresh(grants: Grants) -> None:
    first = await code_tokens(grants, ("mcp", "read"))
    assert first.body["scope"] == "mcp read"
    narrowed = await grants.refresh(refresh_of(first), scope="read")
    assert narrowed.body["scope"] == "read"
    assert jwt_claims(str(narrowed.body["access_token"]))["scope"] == "read"
    assert narrowed.grant.scopes == ("read",)


@pytest.mark.parametrize("scope", ["mcp admin", "write", "MCP"])
async def test_scopes_cannot_be_widened_on_refresh(grants: Grants, scope: str) -> None:
    first = await code_tokens(grants)
    assert await refused(grants.refresh(refresh_of(first), scope=scope)) == "invalid_scope"


async def test_a_refresh_for_another_resource_is_invalid_target(grants: Grants) -> None:
    first = await code_tokens(grants)
    same = await grants.refresh(refresh_of(first), resource=ECHO)
    assert jwt_claims(str(same.body["access_token"]))["aud"] == ECHO
    assert await refused(grants.refresh(refresh_of(same), resource=OTHER)) == "invalid_target"


@pytest.mark.parametrize(
    "params",
    [{"scope": "mcp admin"}, {"resource": OTHER}],
    ids=["invalid_scope", "invalid_target"],
)
async def test_a_refused_refresh_does_not_use_up_the_token(grants: Grants, params: dict[str, str]) -> None:
    first = await code_tokens(grants)
    with pytest.raises(OAuthError):
        await grants.refresh(refresh_of(first), **params)
    grants.clock.advance(GRACE + 1)
    await grants.refresh(refresh_of(first))
    assert grants.revocations.is_revoked(first.jti) is False


async def test_an_expired_family_is_invalid_grant(grants: Grants) -> None:
    first = await code_tokens(grants)
    grants.clock.advance(REFRESH_TTL - 1)
    second = await grants.refresh(refresh_of(first))
    grants.clock.advance(1)
    assert await refused(grants.refresh(refresh_of(second))) == "invalid_grant"


# --- revocation -----------------------------------------------------------------------------------


async def test_revoking_a_refresh_token_revokes_its_family(grants: Grants) -> None:
    first = await code_tokens(grants)
    second = await grants.refresh(refresh_of(first))
    family = await grants.service.revoke(CLI, refresh_of(second))
    assert family is not None
    assert grants.revocations.is_revoked(first.jti) is True
    assert grants.revocations.is_revoked(second.jti) is True
    assert await refused(grants.refresh(refresh_of(second))) == "invalid_grant"


async def test_revoking_an_unknown_token_is_a_no_op(grants: Grants) -> None:
    first = await code_tokens(grants)
    assert await grants.service.revoke(CLI, "unknown") is None
    assert await grants.service.revoke(CLI, str(first.body["access_token"])) is None
    assert grants.revocations.is_revoked(first.jti) is False


async def test_revoking_another_clients_token_is_unauthorized_client(grants: Grants) -> None:
    first = await code_tokens(grants)
    assert await refused(grants.service.revoke(OTHER_CLIENT, refresh_of(first))) == "unauthorized_client"
    assert grants.revocations.is_revoked(first.jti) is False
    await grants.refresh(refresh_of(first))


async def test_revoke_user_revokes_each_family_of_the_user(grants: Grants) -> None:
    await grants.put_code("one")
    await grants.put_code("two")
    await grants.put_code("three", client_id="other-cli")
    one = await grants.redeem(code="one")
    two = await grants.redeem(code="two")
    three = await grants.redeem(OTHER_CLIENT, code="three")
    assert await grants.service.revoke_user("alice", "cli") == 2
    assert [grants.revocations.is_revoked(i.jti) for i in (one, two, three)] == [True, True, False]
    assert await grants.service.revoke_user("alice", None) == 1
    assert grants.revocations.is_revoked(three.jti) is True
    assert await grants.service.revoke_user("alice", None) == 0
