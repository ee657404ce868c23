"""The model server application: assembles settings, the registry of models, error handlers and routes."""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from model_server import routes
from model_server.config import Settings
from model_server.errors import install_error_handlers
from model_server.registry import Limits, ModelRegistry

# What answers without the token: a load balancer's or Compose's health check.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})


class Guard:
    """Every route but the health routes: the shared bearer token (when one is set), and no cross-site browser.

    The token is compared in constant time. A browser says where a request comes from
    (Sec-Fetch-Site); a request another site's page makes is refused whatever it carries.
    """

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {key.lower(): value for key, value in scope["headers"]}
        if headers.get(b"sec-fetch-site", b"").lower() in (b"cross-site", b"same-site"):
            await _refuse(send, 403, "the model server takes no requests from other sites' web pages")
            return
        if self.token is not None:
            scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
                await _refuse(
                    send,
                    401,
                    "this model server needs `Authorization: Bearer <token>` with the token "
                    "it shares with the code location (CONSTELLATION_MODEL_SERVER_TOKEN)",
                    [(b"www-authenticate", b'Bearer realm="constellation-model-server"')],
                )
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app with its own, empty registry of loaded models."""
    settings = settings or Settings()
    registry = ModelRegistry(settings.models_root, settings.batch_size, settings.device, Limits.from_settings(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = registry.start_sweeping(settings.lease_sweep_s)  # a crashed holder's lease expires
        try:
            yield
        finally:
            stop()

    app = FastAPI(
        title="Constellation model server",
        summary="Hugging Face pipelines and ONNX Runtime behind the Open Inference Protocol (KServe V2) and Triton's "
        "repository API.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry = registry
    install_error_handlers(app)
    app.include_router(routes.router)
    # Added before the Guard, so inside it: the Guard checks a binary inference request's token first.
    app.add_middleware(routes.BinaryInference, registry=registry, settings=settings)
    app.add_middleware(Guard, token=settings.token.get_secret_value().strip() if settings.token else None)
    return app


app = create_app()
