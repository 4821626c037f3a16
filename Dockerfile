# syntax=docker/dockerfile:1
# mlgate's container image. Three stages: the web UI's browser libraries (npm ci from the lock
# file), the wheels (mlgate's own, with those assets inside, and every dependency's), and a slim
# runtime that installs the wheels offline: no compilers, no npm, no build tools in it.
# tests/deploy/test_image_install.py replays the wheel build, the install, this file's ENV and
# its HEALTHCHECK in a clean directory, since CI has no container engine to build with.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG NODE_IMAGE=node:22-bookworm-slim

FROM ${NODE_IMAGE} AS assets
WORKDIR /src/gates/server/web/frontend
COPY gates/server/web/frontend/package.json gates/server/web/frontend/package-lock.json gates/server/web/frontend/build.mjs ./
# build.mjs copies the pinned libraries into ../static/vendor.
RUN npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY tracking ./tracking
COPY registry ./registry
COPY gates ./gates
COPY --from=assets /src/gates/server/web/static/vendor ./gates/server/web/static/vendor
# mlgate's wheel first (package-data carries the UI assets and the migrations), then a wheel of
# every dependency, so the runtime stage installs with --no-index.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip wheel --wheel-dir /wheels /wheels/mlgate-*.whl

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="mlgate" \
      org.opencontainers.image.description="Model registry and deployment gates speaking MLflow's REST protocol" \
      org.opencontainers.image.licenses="Apache-2.0"
# Read-only root file system friendly: no .pyc writes, and everything mlgate writes goes to
# MLGATE_DATA_DIR (a volume) or /tmp (mount a tmpfs). Production sets MLGATE_DATABASE_URL to
# PostgreSQL and MLGATE_ARTIFACTS_DESTINATION to s3://...; these defaults suit a single box.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLGATE_HOST=0.0.0.0 \
    MLGATE_PORT=5000 \
    MLGATE_DATA_DIR=/var/lib/mlgate \
    MLGATE_DATABASE_URL=sqlite:////var/lib/mlgate/mlgate.db \
    MLGATE_ARTIFACTS_DESTINATION=/var/lib/mlgate/artifacts
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels mlgate==0.1.0 \
 && groupadd --system --gid 10001 mlgate \
 && useradd --system --uid 10001 --gid mlgate --home-dir /var/lib/mlgate --shell /usr/sbin/nologin mlgate \
 && install -d -o mlgate -g mlgate -m 0750 /var/lib/mlgate
VOLUME ["/var/lib/mlgate"]
WORKDIR /var/lib/mlgate
USER 10001:10001
EXPOSE 5000
# /health is cheap and never touches the database (readiness is /ready); python is the one
# HTTP client in a slim image.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('MLGATE_PORT', '5000'), timeout=4)"]
ENTRYPOINT ["mlgate"]
# With MLGATE_HOST=0.0.0.0 the server refuses to start unless MLGATE_AUTH=true (with a first
# administrator) or MLGATE_ALLOW_UNAUTHENTICATED_PUBLIC_BIND=true says a proxy authenticates.
CMD ["server"]
