# The code location "constellation": `dagster api grpc` on port 4000. With Dagster's default run
# launcher, every run is a process of this container, so it holds the whole project.
# Build: docker build -f assets.Dockerfile -t constellation-code .   (EXTRAS=docker or k8s adds a run launcher)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/constellation/app \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    CONSTELLATION_DATA_ROOT=/opt/constellation/data \
    CONSTELLATION_ARTIFACT_ROOT=/opt/constellation/artifacts \
    CONSTELLATION_OUTPUT_ROOT=/opt/constellation/outputs

# One uid in every image, so that they all read and write the shared volumes.
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin constellation

# Dependencies first, in their own layer: only a change to pyproject.toml rebuilds it.
ARG EXTRAS=""
COPY pyproject.toml deploy/docker/requirements.py /tmp/build/
RUN python /tmp/build/requirements.py code_server --extras "$EXTRAS" > /tmp/build/requirements.txt \
    && pip install --no-cache-dir -r /tmp/build/requirements.txt \
    && rm -rf /tmp/build

WORKDIR /opt/constellation/app
COPY orchestrator ./orchestrator
# Bytecode compiled once here: with PYTHONDONTWRITEBYTECODE every process (each Dagster run worker
# too) would compile the sources again on import.
RUN python -m compileall -q orchestrator
COPY deploy/docker/dagster.yaml ${DAGSTER_HOME}/dagster.yaml
# Volume mount points, owned by the app user (an empty named volume takes their owner).
RUN mkdir -p /opt/constellation/data /opt/constellation/artifacts /opt/constellation/outputs "${DAGSTER_HOME}/storage" \
    && chown constellation:constellation /opt/constellation/data /opt/constellation/artifacts \
       /opt/constellation/outputs "${DAGSTER_HOME}" "${DAGSTER_HOME}/storage"

USER 10001:10001
EXPOSE 4000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "4000", "-m", "orchestrator.assets.repository", "--location-name", "constellation"]
