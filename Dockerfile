# PyPI's torch wheels for Linux include CUDA, so one image serves CPU and GPU workers. For a
# smaller CPU-only image, pass a CPU wheel index: --build-arg TORCH_INDEX=<index URL>.
FROM python:3.11-slim
ARG TORCH_INDEX=""
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 CBIRQ_HOME=/data/cbirq TORCH_HOME=/models/torch
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cbirq ./cbirq
RUN pip install ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} ".[onnx,web]" \
    && useradd --create-home --uid 1000 cbirq \
    && mkdir -p /data/cbirq /models/torch && chown -R cbirq /data /models
USER cbirq
ENTRYPOINT ["cbirq"]
CMD ["worker"]
