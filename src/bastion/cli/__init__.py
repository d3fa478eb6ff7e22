"""The ``bastion`` command: serve, demo, check, token, policy, audit."""

from __future__ import annotations

from bastion.cli.app import app, main

__all__ = ["app", "main"]
