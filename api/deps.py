"""Dependencies shared by the routes: settings, the Dagster client, the bearer token."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.config import Settings, get_settings
from api.dagster_client import DagsterClient
from api.errors import ApiError

_bearer = HTTPBearer(auto_error=False, description="Required when CONSTELLATION_API_TOKEN is set.")

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_dagster(request: Request) -> DagsterClient:
    return request.app.state.dagster


DagsterDep = Annotated[DagsterClient, Depends(get_dagster)]


def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse the request unless it carries the configured bearer token (if one is set)."""
    expected = settings.api_token
    if expected is None:
        return
    given = credentials.credentials if credentials else ""
    # compare_digest takes the same time wherever the strings differ.
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
