#!/usr/bin/env bash
# Set up .venv and run the whole test suite: unit tests, then integration tests that start a
# real redis-server and real `cbirq worker` processes. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# redis-server: the integration tests start their own on a free port.
if ! command -v redis-server >/dev/null; then
  echo "installing redis-server"
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq redis-server >/dev/null
fi
scripts/setup.sh
.venv/bin/ruff check cbirq tests scripts
.venv/bin/python -m pytest "$@"
