#!/usr/bin/env bash
# Install a Debian package the tests or benchmarks need, if the file it provides is missing.
#
#   bash scripts/install-debian-package.sh chromium /usr/bin/chromium   # browser tests (Playwright)
#   bash scripts/install-debian-package.sh wrk /usr/bin/wrk             # make bench
#
# Idempotent: does nothing when FILE exists; runs `apt-get update` only when the package cannot
# be installed from the current package lists. Needs root or sudo.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 PACKAGE FILE" >&2
    exit 2
fi
PACKAGE=$1
FILE=$2
NAME=$(basename "$0")

if [ -e "$FILE" ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "$NAME: $FILE is missing and this is not root (no sudo); install it: apt-get install $PACKAGE" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q --no-install-recommends "$PACKAGE" >/dev/null 2>&1; then
    echo "$NAME: updating the package lists" >&2
    $SUDO apt-get update -q >/dev/null
    $SUDO apt-get install -y -q --no-install-recommends "$PACKAGE" >/dev/null
fi
[ -e "$FILE" ] || { echo "$NAME: $PACKAGE installed but $FILE is still missing" >&2; exit 1; }
echo "$NAME: installed $PACKAGE ($FILE)" >&2
