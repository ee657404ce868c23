"""Submitting pipelines: POST /execute and POST /validate."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import weakref
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from starlette.requests import ClientDisconnect

from api.config import Settings
from api.dagster_client import BODY_HASH_TAG, IDEMPOTENCY_TAG, DagsterClient
from api.deps import DagsterDep, SettingsDep, require_token
from api.errors import ApiError
from api.schemas import WRITE_ERRORS, Failure, Launched, PipelineRequest, Valid
from orchestrator import contract
from orchestrator.engine import Catalog, Limits, PipelineInvalid, Plan, build_plan, parse_request

router = APIRouter(tags=["pipelines"], dependencies=[Depends(require_token)])

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": PipelineRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            }
        },
    }
}
_EXECUTE_ERRORS = {
    **WRITE_ERRORS,
    400: {
        "model": Failure,
        "description": "malformed Idempotency-Key or X-Constellation-User header, or a Host "
        "the gateway does not answer for",
    },
}
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_USER = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
USER_TAG, MODEL_TAG = contract.Tags.USER, contract.Tags.MODEL
# Weak values: a key's lock lives while a request holds or awaits it, then goes.
_key_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


@router.post("/execute", response_model=Launched, responses=_EXECUTE_ERRORS, openapi_extra=_BODY_DOC)
async def execute(
    request: Request,
    settings: SettingsDep,
    dagster: DagsterDep,
    idempotency_key: Annotated[
        str | None, Header(description="retrying with the same key returns the same run")
    ] = None,
    user: Annotated[
        str | None,
        Header(
            alias="X-Constellation-User",
            description="who submits, as the client says (unchecked: a tag for per-user concurrency limits, "
            "not an identity)",
        ),
    ] = None,
) -> Launched:
    """Validate a pipeline and launch it as a run of build_execute_job."""
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        raise ApiError(400, "Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 . _ : -")
    if user is not None and not _USER.match(user):
        raise ApiError(400, "X-Constellation-User must be 1-64 characters of A-Z a-z 0-9 . _ @ -")
    instructions, plan = await _checked(request, settings, dagster)
    digest = hashlib.sha256(json.dumps(instructions, sort_keys=True).encode()).hexdigest()
    tags = {BODY_HASH_TAG: digest, **_concurrency_tags(plan, user)}
    if idempotency_key is None:
        run_id = await dagster.launch(instructions, tags)
        return Launched(run_id=run_id, run_url=dagster.run_url(run_id))
    # One gateway process serialises submissions per key; the key itself lives in Dagster's
    # run tags, so a retry finds its run even after a gateway restart.
    lock = _key_locks.setdefault(idempotency_key, asyncio.Lock())
    async with lock:
        earlier = await dagster.run_tagged(IDEMPOTENCY_TAG, idempotency_key)
        if earlier is not None:
            if earlier.tags.get(BODY_HASH_TAG) != digest:
                raise ApiError(409, "this Idempotency-Key was already used for a different pipeline")
            return Launched(run_id=earlier.run_id, replayed=True, run_url=dagster.run_url(earlier.run_id))
        run_id = await dagster.launch(instructions, {**tags, IDEMPOTENCY_TAG: idempotency_key})
    return Launched(run_id=run_id, run_url=dagster.run_url(run_id))


@router.post("/validate", response_model=Valid, responses=WRITE_ERRORS, openapi_extra=_BODY_DOC)
async def validate(request: Request, settings: SettingsDep, dagster: DagsterDep) -> Valid:
    """Run every check of /execute without launching anything: the catalog's, then the code location's (its data
    root, connections, URL policy, S3 settings and model server), which /execute's launch runs too."""
    instructions, plan = await _checked(request, settings, dagster)
    await dagster.check(instructions)
    return Valid(message="the pipeline is valid", instructions=len(instructions), nodes=len(plan))


async def _checked(request: Request, settings: Settings, dagster: DagsterClient) -> tuple[list[Any], Plan]:
    """The request's instructions and their plan, or 413/422 saying what is wrong."""
    body = await _read_body(request, settings.max_body_bytes, settings.max_drain_bytes)
    try:
        instructions = parse_request(body, Limits(max_body_bytes=settings.max_body_bytes))
        catalog = Catalog.from_json(await dagster.catalog(settings.catalog_ttl_s))
        return instructions, build_plan(instructions, catalog)
    except PipelineInvalid as invalid:
        errors = [p.to_json() for p in invalid.problems]
        raise ApiError(422, f"invalid pipeline: {invalid}", errors) from None


def _concurrency_tags(plan: Plan, user: str | None) -> dict[str, str]:
    """Tags that Dagster's tag concurrency limits can count: the user, and the model if only one is used."""
    models = {
        node.literals["model"]
        for node in [*plan.roots, *plan.shared.values()]
        if isinstance(node.literals.get("model"), str)
    }
    tags = {USER_TAG: user} if user else {}
    if len(models) == 1:
        tags[MODEL_TAG] = contract.slug(models.pop())  # as the model server names it
    return tags


async def _read_body(request: Request, limit: int, drain: int) -> bytes:
    """Read at most `limit` bytes; past it, keep reading (and dropping) up to `drain`, then 413."""
    declared = request.headers.get("content-length", "")
    too_large = ApiError(413, f"body is larger than the limit of {limit} bytes")
    if declared.isdigit() and int(declared) > drain:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            elif size > drain:
                break
    except ClientDisconnect:  # an answer no one may read, but a refusal, not an error of ours
        raise ApiError(400, "the client closed the connection before sending the whole request body") from None
    if size > limit:
        raise too_large
    return b"".join(chunks)
