#!/usr/bin/env bash
# Set up .venv and run the whole test suite: unit tests, then integration tests that start a
# real redis-server and real `cbirq worker` processes. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# redis-server: the integration tests start their own on a free port. chromium and its
# driver: tests/browser drives the web page in them (selenium's own downloader cannot be used
# offline, so the tests point it at these).
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
scripts/setup.sh
.venv/bin/ruff check cbirq tests scripts
.venv/bin/python -m pytest "$@"
