#!/usr/bin/env bash
# The compose cluster end to end, on this machine's Docker engine, as a user runs it:
# builds what it cannot pull, `up -d --scale worker=2`, then from the host's CLI through the
# published 127.0.0.1 port: index (bytes through Redis), query, a short training job; a worker
# container killed mid-index; Redis restarted mid-index; down and up again (data kept);
# --scale worker=3, the third worker's cold start; the gpu profile's config. Last line:
# `compose check: ok` and the timings. Leaves the images (cbirq:cpu, cbirq:torch, the base
# stand-ins) for later runs, and prints their sizes. Needs root for apt-get and dockerd when
# they are missing. All traffic stays on the host's loopback and the stack's own network.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
declare -A took
step_name=start
step() { echo "== $1"; step_name=$1; step_began=$SECONDS; }
done_step() { took[$step_name]=$((SECONDS - step_began)); }
compose=(docker-compose -p cbirqcheck)
# A failing step names itself, its command and exit status, then shows the stack's state and
# each container's last log lines: a CI run that stops here says why.
on_failure() {
  echo "compose check: step '$step_name' failed (exit $1) at line $2: $3" >&2
  df -h / /var/lib/docker >&2 || true
  if docker info >/dev/null 2>&1; then
    "${compose[@]}" ps >&2 || true
    "${compose[@]}" logs --no-color --tail 40 >&2 || true
  fi
}
trap 'on_failure $? $LINENO "$BASH_COMMAND"' ERR
# The first container of a service. Not `| head -1`: head exits after one line, and under
# pipefail docker-compose's SIGPIPE on the next line failed the whole script (exit 141).
first_container() { "${compose[@]}" ps -q "$1" | sed -n 1p; }

step "docker"
if ! command -v docker >/dev/null || ! command -v docker-compose >/dev/null; then
  apt-get update -qq && apt-get install -y -qq docker.io docker-compose >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  (dockerd > /tmp/cbirq-dockerd.log 2>&1 &)
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
docker info >/dev/null
done_step

step "images"
# Docker Hub's images when they can be had, else stand-ins from Debian's packages.
export CBIRQ_BASE_IMAGE=${CBIRQ_BASE_IMAGE:-python:3.11-slim-bookworm}
export CBIRQ_REDIS_IMAGE=${CBIRQ_REDIS_IMAGE:-redis:7.2-alpine}
if ! { docker image inspect "$CBIRQ_BASE_IMAGE" "$CBIRQ_REDIS_IMAGE" >/dev/null 2>&1 \
       || { docker pull -q "$CBIRQ_BASE_IMAGE" && docker pull -q "$CBIRQ_REDIS_IMAGE"; } \
          >/dev/null 2>&1; }; then
  export CBIRQ_BASE_IMAGE=cbirq-base/python:3.11-bookworm CBIRQ_REDIS_IMAGE=cbirq-base/redis:7.0-bookworm
  scripts/docker-bases.sh
fi
scripts/setup.sh
scripts/wheelhouse.sh
df -h /var/lib/docker | tail -1 | awk '{print "disk free before the builds: " $4}'
scripts/build-images.sh
docker images cbirq --format '{{.Repository}}:{{.Tag}} {{.Size}}'
export CBIRQ_REDIS_PASSWORD=${CBIRQ_REDIS_PASSWORD:-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')}
done_step

cli=.venv/bin/cbirq
export CBIRQ_BROKER_URL=redis://127.0.0.1:6379/0
work=$(mktemp -d)
cleanup() {
  "${compose[@]}" down -v >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
"${compose[@]}" down -v >/dev/null 2>&1 || true

# Workers: the extraction workers, the query worker and the trainer.
step "up"
"${compose[@]}" up -d --scale worker=2 >/dev/null
.venv/bin/python scripts/compose_check.py wait-workers 4
done_step

step "index and query"
.venv/bin/python scripts/compose_check.py photos "$work/photos" 300
began=$SECONDS
"$cli" index "$work/photos" --index check --json > "$work/index.json"
.venv/bin/python scripts/compose_check.py summary "$work/index.json" 300 $((SECONDS - began + 1))
"$cli" query "$work/photos/set0/img003.png" --index check --json > "$work/query.json"
.venv/bin/python scripts/compose_check.py first "$work/query.json" img003.png
done_step

step "train"
.venv/bin/python scripts/compose_check.py cifar "$work/cifar10"
worker=$(first_container worker)
docker cp "$work/cifar10" "$worker:/datasets/"
"$cli" submit-train --data cifar10 --epochs 1 --batch-size 16 --wait -o "$work/final.pth" >/dev/null
test -s "$work/final.pth"
done_step

step "worker killed mid-index"
.venv/bin/python scripts/compose_check.py photos "$work/kill" 1000 1000
.venv/bin/python scripts/compose_check.py kill-mid-index "$work/kill" 1000 \
  "$(first_container worker)"
"${compose[@]}" up -d --scale worker=2 >/dev/null
done_step

step "redis restarted mid-index"
.venv/bin/python scripts/compose_check.py photos "$work/restart" 400 3000
.venv/bin/python scripts/compose_check.py restart-mid-index "$work/restart" 400 \
  "$(first_container redis)"
done_step

step "down and up"
"${compose[@]}" down >/dev/null
"${compose[@]}" up -d --scale worker=2 >/dev/null
.venv/bin/python scripts/compose_check.py wait-workers 4
.venv/bin/python scripts/compose_check.py still-there check 300 "$("$cli" jobs --json)"
done_step

# The third worker starts while chunks wait: its cold start, to its first answered chunk.
step "scale to 3"
.venv/bin/python scripts/compose_check.py photos "$work/cold" 800 7000
.venv/bin/python scripts/compose_check.py cold-start "$work/cold" 800 worker 3
.venv/bin/python scripts/compose_check.py wait-workers 5
.venv/bin/python scripts/compose_check.py photos "$work/three" 240 5000
.venv/bin/python scripts/compose_check.py all-take-work "$work/three" 240
done_step

step "gpu profile"
"${compose[@]}" --profile gpu config -q
done_step

times=""
for name in docker images up "index and query" train "worker killed mid-index" \
    "redis restarted mid-index" "down and up" "scale to 3" "gpu profile"; do
  times+="$name ${took[$name]}s, "
done
echo "compose check: ok in $((SECONDS - started))s (${times%, })"
