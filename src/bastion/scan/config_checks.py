"""Findings about a configured MCP server, before connecting to it: hard-coded secrets and
servers reached without Bastion.

- ``hardcoded-secret``: a credential written as a value in ``env``, ``args`` (``--token X``,
  ``--api-key=X``, a URL with a password), ``headers`` or the URL itself
  (``bastion.scan.secrets``); high for a known token format, medium for a random-looking value
  under a secret's name. A reference (``${env:X}``, ``${input:x}``) is not a secret.
- ``unprotected-server``: an HTTP server whose URL is not under the Bastion base URL given
  (``--bastion``): its calls bypass Bastion's identity, policy and audit. Plain ``http://`` to a
  host that is not loopback is high (credentials and results in clear text).

Pure: reads only the ``ServerEntry``.
"""

from __future__ import annotations

import ipaddress
import urllib.parse

from bastion.scan.clients import ServerEntry
from bastion.scan.findings import Finding, Severity
from bastion.scan.secrets import find_secrets, mask

__all__ = ["check_server"]

_FLAG_NAMES = ("key", "token", "secret", "password", "passwd", "pwd", "auth", "credential", "bearer", "cookie")


def _loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _secret_findings(entry: ServerEntry, where: str, key: str, value: str) -> list[Finding]:
    findings = []
    for hit in find_secrets(value, key=key)[:1]:
        severity: Severity = "medium" if hit.kind == "high-entropy value" else "high"
        findings.append(Finding("hardcoded-secret", severity, f"{hit.kind} written in the configuration of server "
                                f"{entry.name!r} ({where}): use a reference such as ${{env:NAME}} or a secret store",
                                f"{entry.pointer}/{where}", mask(value[hit.start : hit.end])))  # fmt: skip
    return findings


def _arg_findings(entry: ServerEntry) -> list[Finding]:
    findings: list[Finding] = []
    previous = ""
    for i, arg in enumerate(entry.args):
        flag, _, inline = arg.partition("=") if arg.startswith("-") else ("", "", "")
        if inline:
            findings += _secret_findings(entry, f"args/{i}", flag, inline)
        else:
            key = previous if previous.startswith("-") and any(n in previous.lower() for n in _FLAG_NAMES) else ""
            findings += _secret_findings(entry, f"args/{i}", key, arg)
        previous = arg
    return findings


def check_server(entry: ServerEntry, *, bastion: str | None = None) -> list[Finding]:
    """The findings for one configured server (``bastion``: Bastion's base URL, if known)."""
    findings: list[Finding] = []
    for name, value in entry.env.items():
        findings += _secret_findings(entry, f"env/{name}", name, value)
    for name, value in entry.headers.items():
        token = value.split(None, 1)[1] if value.lower().startswith(("bearer ", "basic ", "token ")) else value
        findings += _secret_findings(
            entry, f"headers/{name}", name if name.lower() != "authorization" else "token", token
        )
    findings += _arg_findings(entry)
    if entry.url:
        findings += _url_findings(entry, entry.url, bastion)
    seen: set[str] = set()
    unique = []
    for finding in findings:
        if finding.path not in seen:
            seen.add(finding.path)
            unique.append(finding)
    return unique


def _url_findings(entry: ServerEntry, url: str, bastion: str | None) -> list[Finding]:
    findings = _secret_findings(entry, "url", "", url)
    try:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query)
    except ValueError:
        return [Finding("unprotected-server", "medium", f"server {entry.name!r} has a URL that cannot be parsed",
                        f"{entry.pointer}/url")]  # fmt: skip
    for key, value in query:
        findings += _secret_findings(entry, "url", key, value)
    host = parts.hostname or ""
    if bastion and _under(url, bastion):
        return findings
    if parts.scheme == "http" and not _loopback(host):
        findings.append(Finding("unprotected-server", "high", f"server {entry.name!r} is reached over plain HTTP "
                                f"({host}), without Bastion: requests, tokens and results travel in clear text",
                                f"{entry.pointer}/url", url))  # fmt: skip
    else:
        how = (
            "is not under the Bastion URL given"
            if bastion
            else "is reached directly (give --bastion URL to tell Bastion's routes)"
        )
        findings.append(Finding("unprotected-server", "medium", f"server {entry.name!r} {how}: its calls bypass "
                                "Bastion's identity, policy and audit", f"{entry.pointer}/url", url))  # fmt: skip
    return findings


def _under(url: str, base: str) -> bool:
    """Whether ``url`` is ``base`` or below it (scheme, host and port equal, path prefixed)."""
    try:
        u, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(base)
        same = (u.scheme, (u.hostname or "").lower(), u.port) == (b.scheme, (b.hostname or "").lower(), b.port)
    except ValueError:
        return False
    prefix = b.path.rstrip("/")
    return same and (u.path == prefix or u.path.startswith(prefix + "/") or not prefix)
