"""Reachability of the gateway, Dagster and the model server."""

from __future__ import annotations

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import DagsterDep, SettingsDep
from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, responses={503: {"model": Health, "description": "Dagster unreachable"}})
async def health(settings: SettingsDep, dagster: DagsterDep) -> JSONResponse:
    """Whether the gateway can reach Dagster and the model server (no token needed)."""
    dagster_ok = await dagster.ping()
    model_ok = await _model_server_ready(settings.model_server_url)
    body = Health(
        status="success" if dagster_ok else "failure",
        dagster="ok" if dagster_ok else "unreachable",
        model_server="ok" if model_ok else "unreachable",
        message=None if dagster_ok else f"Dagster is unreachable at {settings.dagster_url}",
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if dagster_ok else 503)


async def _model_server_ready(base_url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            response = await client.get(base_url.rstrip("/") + "/v2/health/ready")
    except httpx.HTTPError:
        return False
    return response.status_code == 200
