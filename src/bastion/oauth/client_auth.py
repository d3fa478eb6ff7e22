"""How Bastion authenticates as an OAuth client at someone else's token endpoint."""

from __future__ import annotations

import base64
from urllib.parse import quote

__all__ = ["basic_authorization"]


def basic_authorization(client_id: str, client_secret: str) -> str:
    """The ``Authorization`` value for ``client_secret_basic`` (RFC 6749 section 2.3.1): client id
    and secret each form-urlencoded, joined with ``:``, base64 (RFC 7617), e.g. ``"Basic YTpi"``."""
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")
