#!/usr/bin/env bash
# Install Debian's `chromium` (the browser the end-to-end tests drive with Playwright) if missing.
# Idempotent: does nothing when /usr/bin/chromium exists; runs `apt-get update` only when the
# package cannot be installed from the current package lists. Playwright never downloads a browser:
# the tests launch this one with `executable_path` (tests/support/browser.py).
set -euo pipefail

CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-chromium.sh: chromium is missing and this is not root (no sudo); install it: apt-get install chromium" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; then
    echo "install-chromium.sh: updating the package lists" >&2
    $SUDO apt-get update -q >/dev/null
    $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null
fi
[ -x "$CHROMIUM" ] || { echo "install-chromium.sh: chromium did not install" >&2; exit 1; }
echo "install-chromium.sh: installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")" >&2
