"""`python -m model_server`: serve on CONSTELLATION_MODEL_SERVER_HOST:PORT (default 127.0.0.1:8080)."""

from __future__ import annotations

import logging

import uvicorn

from model_server.app import create_app
from model_server.config import Settings
from model_server.cpus import configure_torch_when_used


def main() -> None:
    settings = Settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_torch_when_used(settings.torch_threads)  # torch is imported by the first model that needs it
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
