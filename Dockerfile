# voxgate worker image: `voxgate serve` with the offline speech models inside its pinned packages.
#
#   docker build -t voxgate:0.1.0 .                       # permissive (Apache-2.0 and compatible) only
#   docker build --build-arg PIPER=1 -t voxgate:0.1.0-piper .   # adds the GPL-3.0 Piper TTS extra
#
# The base is pinned by version and by the digest of its multi-architecture index; refresh both
# together (docs/deploy.md says how). Every Python package comes from the hashed locks, as wheels.

FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS builder

# 1: also install requirements-piper.lock (Piper TTS, GPL-3.0). Off by default: the image stays permissive.
ARG PIPER=0

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
RUN python -m venv /opt/venv

COPY requirements.lock requirements-piper.lock ./
RUN /opt/venv/bin/pip install --no-deps --require-hashes --only-binary=:all: -r requirements.lock \
    && if [ "$PIPER" = "1" ]; then \
         /opt/venv/bin/pip install --no-deps --require-hashes --only-binary=:all: -r requirements-piper.lock; \
       fi

# voxgate itself: no dependencies to resolve (the lock has them all), built with the locked setuptools
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation /src


FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

LABEL org.opencontainers.image.title="voxgate" \
      org.opencontainers.image.description="Self-hosted, governed real-time voice agents: one voxgate worker" \
      org.opencontainers.image.licenses="Apache-2.0"

# The speech models ship inside the installed packages: nothing is fetched at run time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    VOXGATE_HOST=0.0.0.0 \
    VOXGATE_PORT=8600 \
    VOXGATE_DATA_DIR=/var/lib/voxgate \
    VOXGATE_MODEL_CACHE=/var/cache/voxgate/models

# A fixed numeric user, so `runAsNonRoot` can be checked without reading /etc/passwd. keys/ is
# created here so a volume mounted on it starts owned by that user (the workers share it).
RUN groupadd --system --gid 10001 voxgate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/voxgate --no-create-home \
       --shell /usr/sbin/nologin voxgate \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/voxgate /var/lib/voxgate/keys \
    && install -d -o 10001 -g 10001 -m 0700 /var/cache/voxgate

COPY --from=builder /opt/venv /opt/venv
COPY deploy/docker/healthcheck.py /opt/voxgate/healthcheck.py

USER 10001:10001
WORKDIR /var/lib/voxgate
EXPOSE 8600

# liveness only: readiness (models, database, Redis, draining) is the load balancer's question
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/opt/voxgate/healthcheck.py"]

# SIGTERM drains: new calls are refused, calls in progress finish within VOXGATE_DRAIN_GRACE_S
STOPSIGNAL SIGTERM
ENTRYPOINT ["voxgate", "serve"]
