"""Debian's Chromium for end-to-end tests, driven by Playwright's async API.

Playwright never downloads a browser here: ``chromium()`` launches ``/usr/bin/chromium``
(installed by ``make chromium``: ``scripts/install-debian-package.sh chromium /usr/bin/chromium``) through
``executable_path``, headless, with the flags a container needs. A test that uses it is
skipped, with a message saying how to install the browser, when that file is missing.

    async with chromium() as browser:
        context = await browser.new_context()
        page = await context.new_page()
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

__all__ = ["CHROMIUM", "CONTAINER_ARGS", "chromium", "require_chromium"]

#: Debian's ``chromium`` package (a shell wrapper around /usr/lib/chromium/chromium).
CHROMIUM = Path("/usr/bin/chromium")

#: Command-line flags for running in a container:
#:
#: - ``--no-sandbox``: the tests run as root, and Chromium refuses to start its sandbox as root;
#: - ``--disable-dev-shm-usage``: a container's ``/dev/shm`` is often 64 MB, too small for
#:   Chromium's shared memory (it then crashes tabs); use ``/tmp`` instead;
#: - ``--disable-gpu``: there is no GPU (headless renders in software anyway);
#: - ``--no-first-run``, ``--no-default-browser-check``, ``--disable-background-networking``:
#:   no first-run UI and no requests to Google's services from a test machine.
CONTAINER_ARGS: tuple[str, ...] = (
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
)


def require_chromium() -> None:
    """Skip the calling test (``pytest.skip``) when ``/usr/bin/chromium`` is missing, saying how to
    install it; under CI (``CI`` set), where ``make test`` installed it, fail instead."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: install Debian's chromium (make chromium, or apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@asynccontextmanager
async def chromium(*, args: Sequence[str] = ()) -> AsyncIterator[Browser]:
    """A headless Debian Chromium (``/usr/bin/chromium``) under Playwright, closed on exit.

    ``args`` are extra command-line flags after ``CONTAINER_ARGS``. Skips the test through
    ``require_chromium`` (so use it inside a test or fixture) when ``/usr/bin/chromium`` does not
    exist; any other failure to launch is an error, not a skip.
    """
    require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=[*CONTAINER_ARGS, *args]
        )
        try:
            yield browser
        finally:
            await browser.close()
