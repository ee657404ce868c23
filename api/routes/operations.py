"""The operation catalog, as the running code location declares it."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from api.deps import DagsterDep, SettingsDep, require_token
from api.schemas import ERRORS, Operations

router = APIRouter(tags=["operations"], dependencies=[Depends(require_token)])


@router.get("/operations", response_model=Operations, responses=ERRORS)
async def operations(settings: SettingsDep, dagster: DagsterDep) -> Operations:
    """Every operation with the JSON Schema of its parameters and its output type."""
    catalog = await dagster.catalog(settings.catalog_ttl_s)
    return Operations(operations=catalog["operations"], types=catalog.get("types", {}))
