#!/usr/bin/env bash
# Stand-ins for the two base images where Docker Hub cannot be reached: a Debian bookworm root
# file system made with debootstrap from Debian's own packages (python 3.11 with venv, redis 7,
# this machine's CA certificates so pip trusts the same registries), imported twice:
#   $CBIRQ_BASE_IMAGE   (default cbirq-base/python:3.11-bookworm)  for the Dockerfile's FROM
#   $CBIRQ_REDIS_IMAGE  (default cbirq-base/redis:7.0-bookworm)    for compose's redis
# Skips what is built already. Needs root (debootstrap) and a running Docker engine.
set -euo pipefail
PYTHON_IMAGE=${CBIRQ_BASE_IMAGE:-cbirq-base/python:3.11-bookworm}
REDIS_IMAGE=${CBIRQ_REDIS_IMAGE:-cbirq-base/redis:7.0-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if docker image inspect "$PYTHON_IMAGE" "$REDIS_IMAGE" >/dev/null 2>&1; then
  echo "base images present: $PYTHON_IMAGE $REDIS_IMAGE"
  exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,redis-server,redis-tools \
  bookworm "$root" "$MIRROR" >/dev/null
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
mkdir -p "$root/data"
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' - "$PYTHON_IMAGE" >/dev/null
tar -C "$root" -c . | docker import \
  --change 'WORKDIR /data' --change 'CMD ["redis-server"]' - "$REDIS_IMAGE" >/dev/null
echo "built $PYTHON_IMAGE and $REDIS_IMAGE"
