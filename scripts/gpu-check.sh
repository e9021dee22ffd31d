#!/usr/bin/env bash
# The GPU check: one command on a fresh machine with an NVIDIA GPU and no network, about
# 5-8 minutes. Results go to $OUT (default gpu-check-out/): gpu-check.md, gpu-check.json, logs.
#   here:            scripts/gpu-pack.sh path/to/cifar10-jpeg.tar.gz    # fills .gpu/
#   on the machine:  bash scripts/gpu-check.sh                          # carrying .gpu
# It uses the machine's own python3 with its PyTorch, adding the wheels in .gpu/wheels;
# CBIRQ_GPU_SMOKE=1 runs every step tiny (and on the CPU when there is no GPU), as the tests do.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if [ -d .gpu/wheels ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/cbirq-site .gpu/wheels/*.whl
  export PYTHONPATH="/tmp/cbirq-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! command -v redis-server >/dev/null && [ -x .gpu/redis/redis-server ]; then
  mkdir -p /tmp/cbirq-bin
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$PWD/.gpu/redis" "$PWD/.gpu/redis/redis-server" \
    > /tmp/cbirq-bin/redis-server
  chmod +x /tmp/cbirq-bin/redis-server
  export PATH="/tmp/cbirq-bin:$PATH"
fi
(nvidia-smi || echo "no nvidia-smi") > "$OUT/nvidia-smi.txt" 2>&1

status=0
# The tests marked gpu, from the files that hold them (the others need packages it lacks).
mapfile -t marked < <(grep -rl "mark.gpu" tests --include='*.py')
"$PY" -m pytest -q -p no:cacheprovider -m gpu "${marked[@]}" 2>&1 | tee "$OUT/gpu-tests.log" \
  || status=1
"$PY" scripts/gpu_check.py --out "$OUT" 2>&1 | tee "$OUT/gpu-check.log" || status=1
echo "gpu check: $([ $status = 0 ] && echo ok || echo FAILED), results in $OUT"
exit $status
