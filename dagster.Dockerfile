# Dagster's webserver (UI and GraphQL, :3000) and daemon (run queue, monitoring, retries): the
# dagster family only, no user code; they reach the code location over gRPC (workspace.yaml).
# Build: docker build -f dagster.Dockerfile -t constellation-dagster .   (EXTRAS=docker for the DockerRunLauncher)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home

RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin constellation

# The dagster family, pinned in pyproject.toml (read there, so the versions are written once).
ARG EXTRAS=""
COPY pyproject.toml deploy/docker/requirements.py /tmp/build/
RUN python /tmp/build/requirements.py dagster --extras "$EXTRAS" > /tmp/build/requirements.txt \
    && pip install --no-cache-dir -r /tmp/build/requirements.txt \
    && rm -rf /tmp/build

COPY deploy/docker/dagster.yaml deploy/docker/workspace.yaml ${DAGSTER_HOME}/
RUN mkdir -p "${DAGSTER_HOME}/storage" && chown constellation:constellation "${DAGSTER_HOME}" "${DAGSTER_HOME}/storage"
WORKDIR ${DAGSTER_HOME}

USER 10001:10001
EXPOSE 3000
# The webserver by default; the daemon's service runs `dagster-daemon run` instead.
CMD ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "/opt/dagster/dagster_home/workspace.yaml"]
