"""The history of comparisons: every compare_models run, from Dagster's asset catalog (api/comparisons.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api import comparisons
from api.deps import DagsterDep, require_token
from api.schemas import ERRORS

router = APIRouter(prefix="/comparisons", tags=["comparisons"], dependencies=[Depends(require_token)])

Dataset = Query(
    None,
    max_length=1700,
    description="the dataset as its asset key path, e.g. local/samples (a comparison's `dataset`)",
)
Fingerprint = Query(
    None,
    pattern=comparisons.FINGERPRINT_PATTERN,
    description="only comparisons made on exactly this data (a comparison's `fingerprint`)",
)
Limit = Query(50, ge=1, le=200, description="at most this many")
Cursor = Query(None, max_length=2000, description="the `next_cursor` of the previous page")


class ComparisonList(BaseModel):
    comparisons: list[dict[str, Any]] = Field(
        description="newest first: run_id, compared_at, dataset, fingerprint, "
        "metric, models (value, ci, rank), verdict, report_url"
    )
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")


class Leaderboard(BaseModel):
    dataset: str
    metric: str | None = Field(description="the headline metric the models are ranked by")
    higher_is_better: bool | None
    fingerprint: str | None = Field(
        description="the data the leading rows were compared on (the newest, or the one asked for)"
    )
    data_changed: bool = Field(description="true when the dataset was compared on more than one fingerprint")
    fingerprints: list[dict[str, Any]] = Field(
        description="each version of the data: fingerprint, comparisons, first and last compared_at (newest first)"
    )
    models: list[dict[str, Any]] = Field(
        description="best first on that data, then rows of other data (same_data false); each model's newest result"
    )
    next_cursor: str | None


@router.get("", response_model=ComparisonList, responses=ERRORS)
async def list_comparisons(
    dagster: DagsterDep,
    dataset: str | None = Dataset,
    fingerprint: str | None = Fingerprint,
    limit: int = Limit,
    cursor: str | None = Cursor,
) -> dict[str, Any]:
    """Past comparisons, newest first: of one dataset, of one exact data (fingerprint), or all."""
    if dataset is not None:
        comparisons.check_dataset(dataset)
    return await comparisons.history(dagster, dataset, fingerprint, limit, cursor)


@router.get("/leaderboard", response_model=Leaderboard, responses=ERRORS)
async def leaderboard(
    dagster: DagsterDep,
    dataset: str = Query(..., max_length=1700, description=Dataset.description),
    fingerprint: str | None = Fingerprint,
    limit: int = Limit,
    cursor: str | None = Cursor,
) -> dict[str, Any]:
    """Every model ever compared on a dataset with its headline metric and interval, best first; says when the
    data changed (rows on another fingerprint come after, flagged)."""
    return await comparisons.leaderboard(dagster, comparisons.check_dataset(dataset), fingerprint, limit, cursor)
