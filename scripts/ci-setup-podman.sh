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

bash "$(dirname "$0")/apt-install.sh" podman "${missing[@]}"
echo "podman set-up: done ($(podman --version))"
