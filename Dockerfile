# The local server (`resonate serve`) as a container image; deploy/README.md says how to use it.
#
#   docker build -t resonate-gcp .
#   docker run -p 8001:8001 -p 9090:9090 -v resonate-data:/data resonate-gcp
#   (add -p 8002:8002 for REST-era SDKs, -p 50051:50051 for the gRPC API)
#
# Two stages: the builder generates the gRPC stubs (grpcio-tools, the `build` extra, installed in
# the builder only; docs/grpc.md), makes a wheel of this project, stubs included, and installs it
# into a virtualenv; the final stage gets only that virtualenv (the runtime dependencies of
# pyproject.toml, no test or Pulumi packages, no build tools). Configuration is the usual
# RESONATE_* environment (docs/operations.md#configuration); tests/test_containers.py checks every
# name set here.

FROM python:3.12-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY shared ./shared
COPY local ./local
COPY functions ./functions
RUN python -m shared.grpc.build --requirements | xargs -d '\n' python -m pip install -q \
 && python -m shared.grpc.build \
 && python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/resonate \
 && /opt/resonate/bin/pip install /wheels/*.whl

FROM python:3.12-slim
# uid/gid 10001: deploy/kubernetes/resonate.yaml runs the pod as this user (runAsUser)
RUN groupadd --system --gid 10001 resonate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin resonate \
 && mkdir /data && chown 10001:10001 /data
COPY --from=builder /opt/resonate /opt/resonate
ENV PATH=/opt/resonate/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RESONATE_SERVER__BIND=0.0.0.0 \
    RESONATE_SERVER__PORT=8001 \
    RESONATE_OBSERVABILITY__METRICS_PORT=9090 \
    RESONATE_LEGACY__POLL_PORT=8002 \
    RESONATE_SERVER__GRPC_PORT=50051 \
    RESONATE_STORAGE__SQLITE__PATH=/data/resonate.db
# the working directory is the data volume: an optional /data/resonate.toml is read at startup
WORKDIR /data
VOLUME /data
USER 10001:10001
# 8001: the API (POST /, /poll, /health, /ready, the older REST API); 9090: Prometheus metrics
# (GET /metrics); 8002: the SSE listener of the REST-era SDKs (docs/legacy-api.md); 50051: the
# older server's gRPC API (docs/grpc.md)
EXPOSE 8001 9090 8002 50051
# slim has no curl: Python's urllib, on the port the server was configured with
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RESONATE_SERVER__PORT', '8001') + '/health', timeout=4)"]
CMD ["resonate", "serve"]
