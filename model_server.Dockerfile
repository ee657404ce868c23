# The model server (:8080): Hugging Face pipelines behind the Open Inference Protocol, on the CPU.
# Models load from a Hugging Face id (cached under HF_HOME) or a folder under CONSTELLATION_MODELS_ROOT,
# both on the `models` volume, so a model is downloaded once.
# Build: docker build -f model_server.Dockerfile -t constellation-model-server .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/constellation/app \
    CONSTELLATION_MODEL_SERVER_HOST=0.0.0.0 \
    CONSTELLATION_MODEL_SERVER_PORT=8080 \
    CONSTELLATION_MODELS_ROOT=/opt/constellation/models/local \
    HF_HOME=/opt/constellation/models/huggingface

RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin constellation

# torch alone first, the CPU build from PyTorch's CPU index (the default one is a CUDA build of
# several GB). Its own layer, keyed by this pin only; scripts/check_deploy.sh checks it equals pyproject's.
ARG TORCH_VERSION=2.13.0
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

COPY pyproject.toml deploy/docker/requirements.py /tmp/build/
RUN python /tmp/build/requirements.py model_server > /tmp/build/requirements.txt \
    && pip install --no-cache-dir -r /tmp/build/requirements.txt \
    && rm -rf /tmp/build

WORKDIR /opt/constellation/app
COPY model_server ./model_server
# Bytecode compiled once here: with PYTHONDONTWRITEBYTECODE every process (each Dagster run worker
# too) would compile the sources again on import.
RUN python -m compileall -q model_server
RUN mkdir -p /opt/constellation/models/local /opt/constellation/models/huggingface \
    && chown -R constellation:constellation /opt/constellation/models

USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=4)"]
CMD ["python", "-m", "model_server"]
