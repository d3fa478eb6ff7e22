"""CPU per call of the redact filter (issue 15, "Result inspection and redaction").

Run: ``.venv/bin/python benchmarks/redact_cost.py``. Prints microseconds of process CPU per
``RedactFilter.apply`` over many calls, three times, for a ``tools/call`` result whose one text block
holds 4 KB (4,096 characters):

- ``clean rows``: JSON rows of an ordinary tool (UUIDs, dates, amounts, URLs, short prose) with
  nothing to redact, on a route redacting secrets (the default) and on one redacting secrets and
  personal data: the target is at most 50 us;
- ``clean prose``: English text with nothing to redact;
- ``3 findings``: the clean rows with an AWS access key id, an email address and a payment card
  number planted (the card's Luhn check runs, each is replaced, the notes are updated);

and, for scale, the same clean rows as 1,000 short strings of ``structuredContent`` (one pass over
them joined). The exchange is a real ``Exchange`` on a route, the message the parsed upstream answer,
as the runner hands it over; the filter is built as the gateway builds it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import Any

from bastion.config import HttpUpstream, RouteSettings
from bastion.config.results import ResultSettings
from bastion.pipeline.context import Exchange, HttpRequest
from bastion.pipeline.filters import sent_request
from bastion.pipeline.stages.redact import RedactFilter
from bastion.policy import Decision
from bastion.scan.redact_classes import RedactClass
from bastion.transport.routes import RouteRuntime

SIZE = 4096
WORDS = ["the", "order", "was", "shipped", "to", "warehouse", "after", "review", "and", "customer", "on", "time"]


def clean_rows(size: int = SIZE) -> str:
    """``size`` characters of JSON rows an ordinary tool returns, with nothing to redact."""
    rng = random.Random(7)
    rows: list[dict[str, Any]] = []
    while len(json.dumps(rows)) < size:
        n = len(rows)
        rows.append({
            "id": str(uuid.UUID(int=rng.getrandbits(128))), "order": 100000 + n * 37,
            "created": f"2025-0{1 + n % 9}-1{n % 10}T10:2{n % 10}:00Z", "status": rng.choice(["open", "shipped"]),
            "amount": round(rng.random() * 1000, 2), "note": " ".join(rng.choice(WORDS) for _ in range(8)),
            "url": f"https://shop.example.com/orders/{100000 + n * 37}?page=2",
        })  # fmt: skip
    return json.dumps(rows)[:size]


def prose(size: int = SIZE) -> str:
    sentence = "The quarterly review covered shipping delays, vendor contracts and the new onboarding flow. "
    return (sentence * (size // len(sentence) + 1))[:size]


def with_findings(text: str) -> str:
    """``text`` with three values planted (same length overall, about)."""
    quarter = len(text) // 4
    planted = (" AKIAIOSFODNN7EXAMPLE ", " ann.lee@example.com ", " 4111 1111 1111 1111 ")
    parts = [text[i * quarter : (i + 1) * quarter] for i in range(4)]
    return "".join(part + (planted[i] if i < 3 else "") for i, part in enumerate(parts))[:SIZE]


def _route(redact: tuple[RedactClass, ...]) -> tuple[RouteRuntime, RedactFilter]:
    settings = RouteSettings(
        name="db", http=HttpUpstream(url="http://upstream.test/mcp", allow_http=True),
        results=ResultSettings(redact=redact),
    )  # fmt: skip
    route = RouteRuntime(settings=settings, resource_uri="http://gw.test/mcp/db", metadata_url="http://m")
    return route, RedactFilter(settings.results)


def _exchange(route: RouteRuntime) -> Exchange:
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "rows", "arguments": {}}}
    exchange = Exchange(route=route, http=HttpRequest("POST", "/mcp/db", {}, (), None, b""))
    exchange.message, exchange.kind, exchange.action, exchange.target = message, "request", "tools/call", "rows"
    exchange.decision = Decision("allow", ("p",))
    return exchange


async def per_call(redact: tuple[RedactClass, ...], result: dict[str, Any], calls: int) -> float:
    """Microseconds of CPU per ``apply`` (the exchanges are built outside the timed loop)."""
    route, redactor = _route(redact)
    exchanges = [_exchange(route) for _ in range(calls)]
    answers = [sent_request(e) for e in exchanges]
    message = {"jsonrpc": "2.0", "id": 1, "result": result}
    await redactor.apply(_exchange(route), message, sent_request(_exchange(route)))  # compile the pattern once
    start = time.process_time()
    for exchange, answered in zip(exchanges, answers, strict=True):
        await redactor.apply(exchange, message, answered)
    return (time.process_time() - start) / calls * 1e6


def _text(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}]}


async def figures() -> dict[str, float]:
    """One measurement of each case, in us per call."""
    rows = clean_rows()
    structured = {"rows": [{"note": " ".join(WORDS[n % 7 : n % 7 + 3]), "n": n} for n in range(1_000)]}
    return {
        "4 KB text, clean rows, secrets": await per_call(("secrets",), _text(rows), 20_000),
        "4 KB text, clean rows, secrets+pii": await per_call(("secrets", "pii"), _text(rows), 20_000),
        "4 KB text, clean prose, secrets+pii": await per_call(("secrets", "pii"), _text(prose()), 20_000),
        "4 KB text, 3 findings, secrets+pii": await per_call(("secrets", "pii"), _text(with_findings(rows)), 5_000),
        "structuredContent of 1,000 rows, secrets+pii": await per_call(
            ("secrets", "pii"), {"content": [], "structuredContent": structured}, 500
        ),
    }


async def main() -> None:
    """Print the figures three times."""
    for _ in range(3):
        for name, value in (await figures()).items():
            print(f"redact, {name}: {value:.1f} us/call")


if __name__ == "__main__":
    asyncio.run(main())
