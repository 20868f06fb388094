#!/usr/bin/env bash
# Install Debian's chromium (and a font for legible text), which the GraphiQL browser test
# drives through Playwright (tests/test_graphiql_browser.py); Playwright's own browser
# downloads are never used.
#
# Idempotent and quick when it is there: apt is only touched when /usr/bin/chromium is
# missing. Needs root (CI and the dev machines run as root). Usage: scripts/install-chromium.sh
set -euo pipefail

if [ ! -x /usr/bin/chromium ]; then
    bash "$(dirname "$0")/apt-install.sh" chromium chromium fonts-liberation
fi
# (the Debian wrapper script prints a harmless warning on stderr here)
echo "chromium set-up: $(/usr/bin/chromium --version 2>/dev/null)"
