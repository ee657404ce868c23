"""The model server application: assembles settings, the registry of models, error handlers and routes."""

from __future__ import annotations

from fastapi import FastAPI

from model_server import routes
from model_server.config import Settings
from model_server.errors import install_error_handlers
from model_server.registry import ModelRegistry


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app with its own, empty registry of loaded models."""
    settings = settings or Settings()
    app = FastAPI(
        title="Constellation model server",
        summary="Hugging Face pipelines and ONNX Runtime behind the Open Inference Protocol (KServe V2) and Triton's "
                "repository API.",
        version="0.1.0",
    )
    app.state.settings = settings
    app.state.registry = ModelRegistry(settings.models_root, settings.batch_size, settings.device)
    install_error_handlers(app)
    app.include_router(routes.router)
    return app


app = create_app()
