# One image for CPU and GPU workers and the web page (PyPI's torch wheels for Linux include CUDA).
#   docker build -t cbirq:latest .                                      # from Docker Hub and PyPI
#   scripts/wheelhouse.sh && docker build -t cbirq:latest .             # offline: wheels from the host
#   docker build --build-arg BASE_IMAGE=... --build-arg TORCH_INDEX=<CPU wheel index URL> .
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG TORCH_INDEX=""
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 CBIRQ_HOME=/data/cbirq TORCH_HOME=/models/torch \
    PATH=/opt/cbirq/bin:$PATH
# Extra CA certificates (a proxy's) from docker/ca-certificates/*.crt, for pip behind it.
COPY docker/ca-certificates/ /usr/local/share/ca-certificates/cbirq/
RUN if ls /usr/local/share/ca-certificates/cbirq/*.crt >/dev/null 2>&1; then update-ca-certificates; fi
WORKDIR /app
# The wheelhouse first: its layer stays cached while cbirq's code changes.
COPY wheelhouse/ /wheelhouse/
RUN python3 -m venv /opt/cbirq \
    && if ls /wheelhouse/*.whl >/dev/null 2>&1; then \
         pip install --no-index --find-links /wheelhouse torch torchvision onnxruntime; \
       fi
COPY pyproject.toml README.md ./
COPY cbirq ./cbirq
RUN if ls /wheelhouse/*.whl >/dev/null 2>&1; then \
      pip install --no-index --find-links /wheelhouse ".[onnx,web]"; \
    else \
      pip install ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} ".[onnx,web]"; \
    fi \
    && useradd --create-home --uid 1000 cbirq \
    && mkdir -p /data/cbirq /models/torch && chown -R cbirq /data /models
USER cbirq
ENTRYPOINT ["cbirq"]
CMD ["worker"]
