"""``bastion.oauth.context.read_body``: a body over the limit is None, a body that stops arriving an OAuth error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from bastion.errors import OAuthError
from bastion.oauth.context import read_body
from bastion.transport.wire import BODY_DEADLINE


def _request(chunks: list[bytes], *, seconds_left: float = 10) -> Request:
    deadline = asyncio.get_running_loop().time() + seconds_left
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/oauth/token",
        "headers": [],
        "extensions": {BODY_DEADLINE: {"deadline": deadline, "timeout_s": 30}},
    }
    messages = iter([{"type": "http.request", "body": c, "more_body": True} for c in chunks])

    async def receive() -> dict[str, Any]:
        return next(messages, None) or await asyncio.sleep(60, {"type": "http.disconnect"})

    return Request(scope, receive)


async def test_a_body_over_the_limit_is_none() -> None:
    assert await read_body(_request([b"x" * 600, b"x" * 600]), 1024) is None


async def test_a_body_that_stops_arriving_is_an_invalid_request() -> None:
    with pytest.raises(OAuthError) as caught:
        await read_body(_request([b"grant_type="], seconds_left=0.05), 1024)
    assert (caught.value.error, caught.value.description) == (
        "invalid_request",
        "the request body did not arrive in time",
    )
