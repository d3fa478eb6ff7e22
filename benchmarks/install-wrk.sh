#!/usr/bin/env bash
# Install Debian's `wrk` (HTTP load generator with LuaJIT scripting) if it is missing.
# Idempotent: does nothing when wrk is already on PATH; runs `apt-get update` only when
# the package cannot be installed from the current package lists.
set -euo pipefail

if command -v wrk >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-wrk.sh: wrk is missing and this is not root (no sudo); install it: apt-get install wrk" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends wrk >/dev/null 2>&1; then
    echo "install-wrk.sh: updating the package lists" >&2
    $SUDO apt-get update -q >/dev/null
    $SUDO apt-get install -y -q --no-install-recommends wrk >/dev/null
fi
command -v wrk >/dev/null 2>&1 || { echo "install-wrk.sh: wrk did not install" >&2; exit 1; }
echo "install-wrk.sh: installed $(command -v wrk)" >&2
