#!/usr/bin/env bash
# Install Debian's chromium (and a font for legible text), which the GraphiQL browser test
# drives through Playwright (tests/test_graphiql_browser.py); Playwright's own browser
# downloads are never used.
#
# Idempotent and quick when it is there: apt is only touched when /usr/bin/chromium is
# missing. Needs root (CI and the dev machines run as root). Usage: scripts/install-chromium.sh
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "chromium set-up: already installed ($(/usr/bin/chromium --version 2>/dev/null))"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "chromium set-up: missing; run as root (apt-get install chromium)" >&2
    exit 1
fi

started=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
echo "chromium set-up: installing chromium fonts-liberation"
apt-get update -qq
apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 \
    chromium fonts-liberation >/dev/null
echo "chromium set-up: done in $(( $(date +%s) - started )) s ($(/usr/bin/chromium --version 2>/dev/null))"
