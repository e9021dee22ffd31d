#!/usr/bin/env bash
# Set up .venv, index the example library in-process (no broker needed) and search it with a
# photo that is not in the library.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
export CBIRQ_HOME="${CBIRQ_HOME:-$PWD/.cbirq-demo}"  # keeps the demo out of your own indexes
.venv/bin/cbirq index examples/library --index demo
.venv/bin/cbirq query examples/query_chelsea.jpg --index demo --top 5
