# syntax=docker/dockerfile:1
# The SARM gateway (gRPC :50051 + HTTP :8080) with the default model and the embedded ONNX Runtime backend.
#   docker build -t sarm-gateway:0.1.0 .
#   docker run --rm -p 50051:50051 -p 8080:8080 sarm-gateway:0.1.0
# The same image runs the CPU Triton fallback (deploy/docker/triton_cpu.py, see deploy/compose.yaml).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: the venv and the model repository, exported from the committed checkpoint ------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, pinned and from the CPU index: `pip install .` would otherwise pull a multi-GB CUDA build.
# Kept identical to Dockerfile.gpu's first steps so that both builds share these cached layers.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sarm ./sarm
COPY service ./service
RUN pip install --no-cache-dir .
COPY model_repo/default/checkpoint ./model_repo/default/checkpoint
# Built here, not at start: the ONNX export takes minutes and every replica must serve the same bytes.
RUN sarm export model_repo/default/checkpoint --out /opt/sarm/model_repo --target cpu

# --- runtime -------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="sarm-gateway" \
      org.opencontainers.image.description="SARM reward service: gRPC + HTTP gateway, default model, local backend"
RUN groupadd --system --gid 10001 sarm \
    && useradd --system --uid 10001 --gid sarm --home-dir /home/sarm --create-home --shell /usr/sbin/nologin sarm
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/sarm/model_repo /opt/sarm/model_repo
# RA-BC jobs score with the PyTorch checkpoint the repository was exported from (its digest is in the manifest).
COPY --from=build /src/model_repo/default/checkpoint /opt/sarm/checkpoint
COPY deploy/docker/triton_cpu.py /opt/sarm/bin/triton_cpu.py
# Encoders load from their wheels: never reach for a model hub from a pod.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    SARM_MODEL_REPO=/opt/sarm/model_repo \
    SARM_GRPC_PORT=50051 \
    SARM_HTTP_PORT=8080
USER 10001:10001
WORKDIR /home/sarm
EXPOSE 50051 8080
# Healthy = able to serve (the readiness endpoint), so `docker ps` and compose show a gateway whose backend is down.
# The slim image has no curl: the venv's Python does the request (bypassing any proxy set for the container).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/readyz' % os.environ['SARM_HTTP_PORT'], timeout=2)"]
ENTRYPOINT ["sarm"]
CMD ["serve"]
