"""Planted values for the content detector tests: made-up tokens in each provider's documented format,
built at run time (no literal credential-shaped string sits in the sources), and valid personal data
from the check-digit algorithms' own documentation."""

from __future__ import annotations

import random
import string

ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "_-"


def token(length: int, alphabet: str = ALNUM, seed: int = 7) -> str:
    """``length`` characters of ``alphabet``, the same for the same seed, with at least one digit, one
    lower and one upper case letter where the alphabet has them."""
    rng = random.Random(f"{seed}-{length}-{alphabet}")
    while True:
        text = "".join(rng.choice(alphabet) for _ in range(length))
        kinds = [set(text) & set(chars) for chars in (string.digits, string.ascii_lowercase, string.ascii_uppercase)]
        if all(
            kinds[i] or not set(alphabet) & set(chars)
            for i, chars in enumerate((string.digits, string.ascii_lowercase, string.ascii_uppercase))
        ):
            return text


PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    + "\n".join(token(64, ALNUM + "+/", seed=n) for n in range(4))
    + "\n-----END PRIVATE KEY-----\n"
)
JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiJhbGljZSIsImF1ZCI6Im1jcCIsImV4cCI6MTk5OTk5OTk5OX0"
    f".{token(86, URLSAFE)}"
)

SECRETS: dict[str, tuple[str, str]] = {
    # rule: (text holding it, the part that must be replaced)
    "aws_access_key": ("creds AKIAIOSFODNN7EXAMPLE in use", "AKIAIOSFODNN7EXAMPLE"),
    "google_api_key": (f"key=AIza{token(35, URLSAFE)}&q=x", f"AIza{token(35, URLSAFE)}"),
    "google_oauth_token": (f"access ya29.{token(60, URLSAFE)} ok", f"ya29.{token(60, URLSAFE)}"),
    "google_client_secret": (f"secret GOCSPX-{token(28, URLSAFE)}", f"GOCSPX-{token(28, URLSAFE)}"),
    "azure_storage_key": (
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={token(86, ALNUM + '+/')}==;EndpointSuffix=x",
        f"{token(86, ALNUM + '+/')}==",
    ),
    "azure_client_secret": (
        f"client secret: Abc8Q~{token(34, ALNUM + '_~.-')} end",
        f"Abc8Q~{token(34, ALNUM + '_~.-')}",
    ),
    "github_token": (f"GITHUB ghp_{token(36)} used", f"ghp_{token(36)}"),
    "gitlab_token": (f"use glpat-{token(20, URLSAFE)} now", f"glpat-{token(20, URLSAFE)}"),
    "slack_token": (
        f"bot xoxb-123456789012-1234567890123-{token(24)} here",
        f"xoxb-123456789012-1234567890123-{token(24)}",
    ),
    "slack_webhook": (
        f"post to https://hooks.slack.com/services/T0000AAAA/B0000BBBB/{token(24)} please",
        f"https://hooks.slack.com/services/T0000AAAA/B0000BBBB/{token(24)}",
    ),
    "stripe_key": (f"stripe sk_live_{token(24)} set", f"sk_live_{token(24)}"),
    "stripe_webhook_secret": (f"whsec_{token(32)}", f"whsec_{token(32)}"),
    "anthropic_key": (f"ANTHROPIC sk-ant-api03-{token(93, URLSAFE)}AA", f"sk-ant-api03-{token(93, URLSAFE)}AA"),
    "openai_key": (f"key sk-proj-{token(64, URLSAFE)} set", f"sk-proj-{token(64, URLSAFE)}"),
    "huggingface_token": (f"hf_{token(34, string.ascii_letters)} ", f"hf_{token(34, string.ascii_letters)}"),
    "npm_token": (f"//registry/:_authToken=npm_{token(36)}", f"npm_{token(36)}"),
    "pypi_token": (f"password = pypi-AgEIcHlwaS5vcmc{token(60, URLSAFE)}", f"pypi-AgEIcHlwaS5vcmc{token(60, URLSAFE)}"),
    "sendgrid_key": (f"SG.{token(22, URLSAFE)}.{token(43, URLSAFE)}", f"SG.{token(22, URLSAFE)}.{token(43, URLSAFE)}"),
    "jwt": (f"id_token {JWT} expires", JWT),
    "private_key": (f"key file:\n{PEM}done", PEM.rstrip("\n")),
    "bearer_token": (f"Authorization: Bearer {token(40)}", token(40)),
    "url_password": ("DATABASE_URL postgres://app:s3cr3t-P4ss@db.internal:5432/app", "s3cr3t-P4ss"),
    "url_secret_param": (
        f"https://acct.blob.core.windows.net/c/b.txt?sv=2022-11-02&sig={token(43, ALNUM + '%')}",
        token(43, ALNUM + "%"),
    ),
    "password": ("DB_PASSWORD=hunter2\nDB_USER=app", "hunter2"),
    "secret_assignment": (f'"api_key": "{token(32)}"', token(32)),
}
