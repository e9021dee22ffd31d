#!/usr/bin/env bash
# Builds cbirq:cpu and cbirq:torch (or the names in CBIRQ_CPU_IMAGE and CBIRQ_TORCH_IMAGE) on
# CBIRQ_BASE_IMAGE. With wheels in wheelhouse/ (scripts/wheelhouse.sh), serves them to the
# build on the host's loopback (`docker build --network host`, the Dockerfile's WHEELS): the
# build reaches no index, and the 3 GB of wheels go neither into the build context nor into a
# layer. Without, pip in the build uses PyPI. The port: CBIRQ_WHEELS_PORT, 8731 by default
# (fixed, as a build argument that changed would rebuild every layer after it).
set -euo pipefail
cd "$(dirname "$0")/.."
args=(--build-arg "BASE_IMAGE=${CBIRQ_BASE_IMAGE:-python:3.11-slim-bookworm}")
if ls wheelhouse/*.whl >/dev/null 2>&1; then
  port=${CBIRQ_WHEELS_PORT:-8731}
  python3 -m http.server --bind 127.0.0.1 --directory wheelhouse "$port" > /dev/null 2>&1 &
  server=$!
  trap 'kill "$server" 2>/dev/null || true' EXIT
  for _ in $(seq 50); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" \
      2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { echo "cannot serve wheelhouse/ on port $port" >&2; exit 1; }
    sleep 0.2
  done
  kill -0 "$server" 2>/dev/null || { echo "cannot serve wheelhouse/ on port $port" >&2; exit 1; }
  # The wheels' names in the URL (which the server ignores): other wheels, other layers.
  args+=(--network host --build-arg \
    "WHEELS=http://127.0.0.1:$port/?wheels=$(ls wheelhouse | sha256sum | cut -c1-16)")
fi
docker build -q "${args[@]}" --target cpu -t "${CBIRQ_CPU_IMAGE:-cbirq:cpu}" . > /dev/null
docker build -q "${args[@]}" --target torch -t "${CBIRQ_TORCH_IMAGE:-cbirq:torch}" . > /dev/null
