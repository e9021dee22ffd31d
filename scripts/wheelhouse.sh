#!/usr/bin/env bash
# Every wheel the Docker images install (cbirq:torch's; cbirq:cpu's are a part of them), into
# wheelhouse/, downloaded by this machine's pip (so from whatever index it uses), for the
# images' Python (3.11, Linux x86-64): with them present, `docker build` reaches no index at
# all. Skips the download when they are there.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
[ -x "$py" ] || py=python3
stamp=wheelhouse/.requirements
"$py" - > "$stamp.new" <<'PY'
import importlib.metadata
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
# async-timeout: redis needs it on Pythons before 3.11.3, as Debian's 3.11.2 is.
for requirement in [*project["dependencies"], *extras["onnx"], *extras["web"],
                    "setuptools>=68", "wheel", "async-timeout>=4.0.3"]:
    print(requirement.split(";")[0].strip())
# torch and torchvision as this machine runs them: an index may pair a torch build with a
# torchvision that does not import beside it (torchvision::nms missing).
for name in ("torch", "torchvision"):
    try:
        print(f"{name}=={importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
        pass
PY
if cmp -s "$stamp.new" "$stamp"; then
  rm "$stamp.new"
  echo "wheelhouse up to date"
  exit 0
fi
# pip matches manylinux tags exactly: name every glibc from 2.17 (CentOS 7) to Debian's 2.36.
platforms=(--platform manylinux2014_x86_64)
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
if ! "$py" -m pip download -q -d wheelhouse --only-binary=:all: --python-version 3.11 \
    --implementation cp "${platforms[@]}" -r "$stamp.new" > wheelhouse/.download.log 2>&1; then
  grep -v "^WARNING: Location" wheelhouse/.download.log >&2
  exit 1
fi
mv "$stamp.new" "$stamp"
du -sh wheelhouse
