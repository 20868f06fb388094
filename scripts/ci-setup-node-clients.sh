#!/usr/bin/env bash
# Install the Node GraphQL clients the tests drive against a live server (tests/clients:
# graphql-http's audit suite, graphql-ws, ...), exactly as the committed package-lock.json
# pins them. The system Node (20+) is enough. npm's cache lives under ~/.cache/zixly/npm.
#
# Idempotent and quick: nothing is done when node_modules matches the lock already.
# Usage: scripts/ci-setup-node-clients.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
clients="$here/tests/clients"
stamp="$clients/node_modules/.zixly-lock-stamp"

if ! command -v npm >/dev/null 2>&1; then
    echo "node clients set-up: npm not found (install Node 20+ with npm)" >&2
    exit 1
fi
if [ -f "$stamp" ] && cmp -s "$stamp" "$clients/package-lock.json"; then
    echo "node clients set-up: already installed"
    exit 0
fi
started=$(date +%s)
cd "$clients"
npm ci --no-audit --no-fund --loglevel=error --cache "${HOME}/.cache/zixly/npm"
cp package-lock.json "$stamp"
echo "node clients set-up: done in $(( $(date +%s) - started )) s"
