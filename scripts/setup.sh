#!/usr/bin/env bash
# Create .venv at the repo root and install cbirq with its test tools (skipped when up to date).
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=.venv/.cbirq-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch/torchvision: any release in pyproject's range; pip takes them from a local wheel cache
# when the machine has one.
.venv/bin/python -m pip install --quiet -e '.[test]'
echo "$want" > "$stamp"
