#!/usr/bin/env bash
# Install Debian packages for a test set-up script: as root, non-interactive (CI has no
# stdin), without recommends, timed. Usage: scripts/apt-install.sh LABEL PACKAGE...
set -euo pipefail
label=$1
shift

if [ "$(id -u)" -ne 0 ]; then
    echo "$label set-up: missing $*; run as root (apt-get install $*)" >&2
    exit 1
fi

started=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
echo "$label set-up: installing $*"
apt-get update -qq
apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "$@" >/dev/null
echo "$label set-up: installed in $(( $(date +%s) - started )) s"
