# Two images, each built in stages: the virtualenv is installed in a build stage and copied
# out, so no wheel, pip cache or build tool is left in a final layer.
#   cpu    extraction, queries and the web page on ONNX Runtime, without torch: the default
#          model's graph is exported and checked by torch in a build stage and copied in
#   torch  everything, training and GPU workers included (torch with its CUDA libraries); the
#          default target
#   docker build --target cpu -t cbirq:cpu . && docker build -t cbirq:torch .   # Docker Hub, PyPI
#   scripts/wheelhouse.sh && scripts/build-images.sh   # no index: the host's wheels, served to
#                                                       # the build (--build-arg WHEELS=<URL>)
#   docker build --build-arg BASE_IMAGE=... --build-arg TORCH_INDEX=<CPU wheel index URL> .
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE} AS base
ENV PYTHONUNBUFFERED=1 CBIRQ_HOME=/data/cbirq TORCH_HOME=/models/torch HF_HOME=/models/hf \
    PATH=/opt/cbirq/bin:$PATH
# Extra CA certificates (a proxy's) from docker/ca-certificates/*.crt, for pip behind it.
# /models is left empty: compose mounts one new volume there in several containers at once, and
# Docker copying an image's files into it raced ("mkdir .../_data/torch: file exists"); torch
# makes TORCH_HOME's folder when it first needs it. HF_HOME holds CLIP weights (open_clip's
# cache) on the same volume: one download for every container, which Hugging Face's file locks
# leave to the first that asks.
COPY docker/ca-certificates/ /usr/local/share/ca-certificates/cbirq/
RUN if ls /usr/local/share/ca-certificates/cbirq/*.crt >/dev/null 2>&1; then update-ca-certificates; fi \
    && useradd --create-home --uid 1000 cbirq \
    && mkdir -p /data/cbirq /models && chown -R cbirq /data /models
WORKDIR /app

# The build stages' virtualenv, at /opt/cbirq as in the final images. pip takes the wheels
# that a find-links page at WHEELS lists when it is given (offline), else the index. The
# wheels are fetched, never copied into the build context or a layer: that was 6 GB more disk.
FROM base AS builder
ARG WHEELS=""
ARG TORCH_INDEX=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/cbirq \
    && if [ -n "$WHEELS" ]; then \
         echo "--no-index --find-links $WHEELS"; \
       else \
         echo "${TORCH_INDEX:+--extra-index-url $TORCH_INDEX}"; \
       fi > /pip-sources
# The dependencies before cbirq's code, so that a code change reinstalls none of them.
COPY pyproject.toml /src/
COPY docker/requirements.py /src/docker/

# From a wheelhouse, its wheels in four steps first (docker/wheels.py says why); the last
# install then only checks that the requirements are met.
FROM builder AS torch-deps
ARG WHEELS=""
COPY docker/wheels.py /src/docker/
RUN python3 /src/docker/wheels.py 1 4
RUN python3 /src/docker/wheels.py 2 4
RUN python3 /src/docker/wheels.py 3 4
RUN python3 /src/docker/wheels.py 4 4
RUN python3 /src/docker/requirements.py torch > /tmp/requirements.txt \
    && pip install $(cat /pip-sources) -r /tmp/requirements.txt

# pyproject keeps torch in cbirq's dependencies (`pip install cbirq` is complete); this image
# takes them from docker/requirements.py, which leaves out what exports graphs (torch, onnx,
# the weight packages). pip goes too, as nothing installs at run time, and numpy's own tests
# (15 MB that nothing imports).
FROM builder AS cpu-deps
RUN python3 /src/docker/requirements.py cpu > /tmp/requirements.txt \
    && pip install $(cat /pip-sources) -r /tmp/requirements.txt \
    && pip uninstall -q -y pip setuptools \
    && find /opt/cbirq/lib/python3.11/site-packages/numpy -depth -type d -name tests \
         -exec rm -r {} +

# cbirq itself, without dependencies, into a tree that both images lay over their virtualenv.
FROM builder AS app
COPY README.md /src/
COPY cbirq /src/cbirq
RUN pip install $(cat /pip-sources) --no-deps --prefix /app-overlay /src

# The default model's graph, exported by torch and checked against it, with the note that lets
# a process without torch run it (cbirq.embed.onnx_runner): as a CPU worker would make it.
FROM torch-deps AS graph
COPY --from=app /app-overlay/ /opt/cbirq/
RUN CBIRQ_HOME=/graph python3 -c "from cbirq.embed.onnx_runner import OrtNet; \
from cbirq.tasks.runtime import backbone; \
assert isinstance(backbone('efficientnet_lite0', 'imagenet', 'onnx').net, OrtNet)"

FROM base AS cpu
COPY --from=cpu-deps /opt/cbirq /opt/cbirq
COPY --from=app /app-overlay/ /opt/cbirq/
COPY --from=graph --chown=cbirq /graph/cache/ /data/cbirq/cache/
USER cbirq
ENTRYPOINT ["cbirq"]
CMD ["worker", "--queues", "extract,query,jobs"]

# On torch-deps' own layers: a copy of its virtualenv was 6 GB more on the build's disk.
FROM torch-deps AS torch
COPY --from=app /app-overlay/ /opt/cbirq/
USER cbirq
ENTRYPOINT ["cbirq"]
CMD ["worker"]
