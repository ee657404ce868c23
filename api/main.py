"""The gateway application: assembles settings, the Dagster client, routes and error handlers."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib.resources import files

import httpx
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.config import Settings, get_settings
from api.dagster_client import DagsterClient
from api.errors import failure, install_error_handlers
from api.guard import HostGuard, WriteGuard
from api.routes import comparisons, health, operations, pipelines, runs


def create_app(settings: Settings | None = None, transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
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

    # The docs are served by `_serve_docs` (assets from the gateway itself, never a CDN), and only by a
    # gateway without a token: they would answer without it, which the README says no route but /health does.
    app = FastAPI(
        title="Constellation",
        summary="Run several models over the exact same dataset; pipelines run on Dagster.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None if settings.api_token else "/openapi.json",
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
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "X-Constellation-User",
                "X-Requested-With",
            ],
        )
    app.add_middleware(HostGuard, allowed_hosts=settings.allowed_hosts, answer=failure)
    if settings.trusted_proxies:
        # Outermost: the client address every check sees is the one the trusted proxies name
        # (X-Forwarded-For read from the right, past each trusted proxy); from anyone else, the peer's.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=_proxy_hosts(settings.trusted_proxies))
    for module in (pipelines, runs, comparisons, operations, health):
        app.include_router(module.router)
    if app.openapi_url:
        _serve_docs(app, app.openapi_url)
    return app


def _proxy_hosts(networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> list[str]:
    """The networks as uvicorn's trusted hosts; an IPv4 network also as IPv6-mapped (a dual-stack socket's peers)."""
    hosts = []
    for network in networks:
        hosts.append(str(network))
        if network.version == 4:
            hosts.append(f"::ffff:{network.network_address}/{96 + network.prefixlen}")
    return hosts


DOCS_ASSETS = "/docs-assets"


def _serve_docs(app: FastAPI, openapi_url: str) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, with the scripts and styles fastapi-offline ships (issue 22)."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")
    oauth2_redirect = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")  # behind a proxy that serves the gateway under a prefix
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + oauth2_redirect,
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,  # fonts.googleapis.com is a CDN too: ReDoc falls back to the system's fonts
        )


app = create_app()
