"""The gateway application: assembles settings, the Dagster client, routes and error handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.config import Settings, get_settings
from api.dagster_client import DagsterClient
from api.errors import failure, install_error_handlers
from api.guard import HostGuard, WriteGuard
from api.routes import health, operations, pipelines, runs


def create_app(
    settings: Settings | None = None, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """Build the app; `transport` lets tests route the Dagster client (never needed in use)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.dagster = DagsterClient(
            settings.dagster_url,
            settings.location_name,
            settings.repository_name,
            settings.job_name,
            settings.dagster_timeout_s,
            transport,
        )
        yield
        await app.state.dagster.aclose()

    app = FastAPI(
        title="Constellation",
        summary="Run several models over the exact same dataset; pipelines run on Dagster.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.dependency_overrides[get_settings] = lambda: settings
    install_error_handlers(app)
    # Added innermost first. Cross-site requests (api/guard.py): Host, then CORS, then the rules for
    # writes (JSON or a header only a consenting server lets a page send; Origin of an allowed page).
    app.add_middleware(WriteGuard, allowed_origins=settings.cors_origins, answer=failure)
    if settings.cors_origins:
        # Bearer tokens, not cookies: no credentials mode is needed.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Constellation-User",
                           "X-Requested-With"],
        )
    app.add_middleware(HostGuard, allowed_hosts=settings.allowed_hosts, answer=failure)
    for module in (pipelines, runs, operations, health):
        app.include_router(module.router)
    return app


app = create_app()
