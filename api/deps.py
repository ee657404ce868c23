"""Dependencies shared by the routes: settings, the Dagster client, the bearer token."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.config import Settings, get_settings
from api.dagster_client import DagsterClient
from api.errors import ApiError
from orchestrator.runstore import RunStore, open_store

_bearer = HTTPBearer(auto_error=False, description="Required when CONSTELLATION_API_TOKEN is set.")

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_dagster(request: Request) -> DagsterClient:
    dagster: DagsterClient = request.app.state.dagster  # set by create_app (api/main.py)
    return dagster


DagsterDep = Annotated[DagsterClient, Depends(get_dagster)]


def get_store(settings: SettingsDep) -> RunStore:
    """Where runs keep their files (CONSTELLATION_ARTIFACT_ROOT): a folder, or s3://bucket/prefix."""
    return open_store(settings.artifact_root, settings.s3_endpoint_url, settings.s3_region)


StoreDep = Annotated[RunStore, Depends(get_store)]


def require_token(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse the request unless it carries the configured bearer token (if one is set).

    A request with no Authorization header from a network in CONSTELLATION_ALLOW_ANONYMOUS_FROM
    passes without it; a wrong token is refused from anywhere.
    """
    expected = settings.api_token
    if expected is None:
        return
    if "authorization" not in request.headers and _from_anonymous_network(request, settings):
        return
    given = credentials.credentials if credentials else ""
    # compare_digest takes the same time wherever the strings differ.
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "missing or wrong bearer token (Authorization: Bearer <token>)")


def _from_anonymous_network(request: Request, settings: Settings) -> bool:
    """Whether the peer's address (as uvicorn reports it) lies in a network allowed without the token."""
    if not settings.allow_anonymous_from or request.client is None:
        return False
    try:
        address = ipaddress.ip_address(request.client.host)
    except ValueError:  # not an address (a Unix socket, a test client)
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in settings.allow_anonymous_from)
