#!/usr/bin/env bash
# Install Podman (the Docker-compatible engine the `docker` runtime is tested against) and
# debootstrap (which makes the base image, since no container registry is reachable).
#
# Idempotent and quick when everything is there: apt is only touched for missing commands.
# Needs root (CI and the dev machines run as root). Usage: scripts/ci-setup-podman.sh
set -euo pipefail

# command -> Debian package that provides it
declare -A NEEDED=(
    [podman]=podman
    [runc]=runc                 # crun fails on this sandbox's cgroup v1/hybrid mode
    [debootstrap]=debootstrap   # base image: debootstrap --variant=minbase bookworm
    [newuidmap]=uidmap
    [slirp4netns]=slirp4netns
)

missing=()
for command in "${!NEEDED[@]}"; do
    command -v "$command" >/dev/null 2>&1 || missing+=("${NEEDED[$command]}")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "podman set-up: already installed ($(podman --version))"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "podman set-up: missing ${missing[*]}; run as root (apt-get install)" >&2
    exit 1
fi

started=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
echo "podman set-up: installing ${missing[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "podman set-up: done in $(( $(date +%s) - started )) s ($(podman --version))"
