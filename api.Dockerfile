# The gateway (FastAPI, :8000): checks pipelines, launches them on Dagster over GraphQL and serves
# their results from the artifacts volume. Needs no Dagster: only FastAPI and the instruction engine.
# Build: docker build -f api.Dockerfile -t constellation-gateway .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/constellation/app \
    CONSTELLATION_ARTIFACT_ROOT=/opt/constellation/artifacts

RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin constellation

COPY pyproject.toml deploy/docker/requirements.py /tmp/build/
RUN python /tmp/build/requirements.py gateway > /tmp/build/requirements.txt \
    && pip install --no-cache-dir -r /tmp/build/requirements.txt \
    && rm -rf /tmp/build

WORKDIR /opt/constellation/app
# The gateway imports orchestrator.engine (validation) and orchestrator.runs, never the ops.
COPY orchestrator ./orchestrator
COPY api ./api
# Bytecode compiled once here: with PYTHONDONTWRITEBYTECODE every process (each Dagster run worker
# too) would compile the sources again on import.
RUN python -m compileall -q orchestrator api
RUN mkdir -p /opt/constellation/artifacts && chown constellation:constellation /opt/constellation/artifacts

USER 10001:10001
EXPOSE 8000
# /health answers 200 while Dagster is reachable (no token needed).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
# --no-proxy-headers: X-Forwarded-For counts only from CONSTELLATION_TRUSTED_PROXIES, which the gateway
# reads itself (uvicorn's default would trust any process on the container's loopback).
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000", "--no-proxy-headers"]
