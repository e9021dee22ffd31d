#!/usr/bin/env bash
# Every wheel the Docker images install (cbirq:torch's; cbirq:cpu's are a part of them), in
# wheelhouse/, as this machine's pip resolves them (so from whatever index it uses), for the
# images' Python (3.11, Linux x86-64). A wheel the index keeps on this disk is linked, not
# copied (torch's are 3 GB); the others are downloaded. scripts/build-images.sh serves them to
# the build, which then reaches no index at all. Does nothing when they are there already.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
[ -x "$py" ] || py=python3
mkdir -p wheelhouse
stamp=wheelhouse/.requirements
{
  "$py" docker/requirements.py torch
  # async-timeout: redis needs it on Pythons before 3.11.3, as Debian's 3.11.2 is.
  printf '%s\n' "setuptools>=68" wheel "async-timeout>=4.0.3"
  # torch and torchvision as this machine runs them: an index may pair a torch build with a
  # torchvision that does not import beside it (torchvision::nms missing).
  "$py" -c 'import importlib.metadata as m
for name in ("torch", "torchvision"):
    try:
        print(f"{name}=={m.version(name)}")
    except m.PackageNotFoundError:
        pass'
} > "$stamp.new"
if cmp -s "$stamp.new" "$stamp"; then
  rm "$stamp.new"
  echo "wheelhouse up to date"
  exit 0
fi
# pip matches manylinux tags exactly: name every glibc from 2.17 (CentOS 7) to Debian's 2.36.
platforms=(--platform manylinux2014_x86_64)
# Older pips (23.2 here) take platform options only with --target, even for a dry run: an empty
# folder, removed after.
target=$(mktemp -d)
trap 'rm -rf "$target"' EXIT
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
if ! "$py" -m pip install -q --dry-run --ignore-installed --only-binary=:all: \
    --python-version 3.11 --implementation cp "${platforms[@]}" --target "$target" \
    --report wheelhouse/.report.json -r "$stamp.new" > wheelhouse/.download.log 2>&1; then
  grep -v "^WARNING: Location" wheelhouse/.download.log >&2
  exit 1
fi
find wheelhouse -maxdepth 1 -name '*.whl' -delete
"$py" - <<'PY'
import json
import urllib.parse
from pathlib import Path

remote = []
for item in json.load(open("wheelhouse/.report.json"))["install"]:
    url = item["download_info"]["url"]
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        path = Path(urllib.parse.unquote(parts.path))
        (Path("wheelhouse") / path.name).symlink_to(path)
    else:
        # pip checks a download against the hash in its URL's fragment.
        sha256 = item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256")
        remote.append(f"{url}#sha256={sha256}" if sha256 else url)
Path("wheelhouse/.remote").write_text("\n".join(remote) + "\n")
PY
if [ -s wheelhouse/.remote ] && ! "$py" -m pip download -q --no-deps -d wheelhouse \
    -r wheelhouse/.remote >> wheelhouse/.download.log 2>&1; then
  grep -v "^WARNING: Location" wheelhouse/.download.log >&2
  exit 1
fi
mv "$stamp.new" "$stamp"
echo "wheelhouse: $(ls wheelhouse/*.whl | wc -l) wheels, $(du -sh --dereference wheelhouse | cut -f1)," \
  "$(du -sh wheelhouse | cut -f1) on this disk"
