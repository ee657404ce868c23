"""The V2 endpoints: health, server and model metadata, inference, and the model repository."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator
from typing import Annotated, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from model_server.config import Settings
from model_server.errors import ServerError, refusal, unexpected
from model_server.exceptions import InputMismatch, InvalidInput
from model_server.protocol import (
    BINARY_HEADER,
    CheckResponse,
    IndexEntry,
    IndexRequest,
    InferOutput,
    InferRequest,
    InferResponse,
    LoadRequest,
    LoadResponse,
    ModelMetadata,
    ReadyResponse,
    RenewRequest,
    RenewResponse,
    ServerMetadata,
    UnloadRequest,
    UnloadResponse,
    attach_binary,
    binary_response,
    split_binary,
)
from model_server.registry import NAME_PATTERN, ModelError, ModelLoading, ModelRegistry, ModelState

Body = TypeVar("Body", bound=BaseModel)
log = logging.getLogger(__name__)


# The dependencies are `async def`: FastAPI would run a plain `def` one in its threadpool, a thread hop
# each per request for nothing that blocks.
async def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _model_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ServerError(
            400,
            f"model name {name!r} is not a valid name: 1-201 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. 'org--model' for the id 'org/model')",
        )
    return name


Registry = Annotated[ModelRegistry, Depends(_registry)]
ServerSettings = Annotated[Settings, Depends(_settings)]
ModelName = Annotated[str, Depends(_model_name)]
router = APIRouter(prefix="/v2")


@router.get("/health/live")
async def live() -> dict[str, bool]:
    """The server process answers."""
    return {"live": True}


@router.get("/health/ready")
async def ready() -> dict[str, bool]:
    """The server accepts requests (models are loaded on demand)."""
    return {"ready": True}


@router.get("", response_model=ServerMetadata)
async def server_metadata() -> ServerMetadata:
    """Name, version and protocol extensions."""
    return ServerMetadata()


@router.get("/models/{name}", response_model=ModelMetadata)
async def model_metadata(name: ModelName, registry: Registry) -> ModelMetadata:
    """A loaded model's platform, task, source, labels (class names by id), inputs and outputs."""
    entry, model = registry.model(name)
    return ModelMetadata(
        name=name,
        platform=model.platform,
        task=entry.task,
        source=entry.source,
        labels=model.labels,
        inputs=model.inputs,
        outputs=model.outputs,
        parameters=model.metadata_parameters(),
    )


@router.get("/models/{name}/stats")
async def model_statistics(name: ModelName, registry: Registry) -> dict:
    """Triton's statistics extension, in part: inferences and requests since the name was loaded, and how many
    requests carried their tensors in binary (the binary tensor data extension) or as JSON numbers."""
    entry = registry.ready(name)
    stats = entry.stats
    return {
        "model_stats": [
            {
                "name": name,
                "version": "1",
                "inference_count": stats.inferences,
                "execution_count": stats.requests,
                "binary_requests": stats.binary_requests,
                "json_requests": stats.requests - stats.binary_requests,
            }
        ]
    }


@router.get("/models/{name}/ready", response_model=ReadyResponse)
async def model_ready(name: ModelName, registry: Registry) -> ReadyResponse | JSONResponse:
    """200 when the model is loaded; 404 when it is not; 400 while it loads."""
    try:
        registry.ready(name)
    except ModelLoading as loading:
        return JSONResponse({"error": str(loading), "name": name, "ready": False}, status_code=400)
    return ReadyResponse(name=name, ready=True)


@router.post("/models/{name}/infer", response_model=InferResponse, response_model_exclude_none=True)
async def infer(name: ModelName, request: Request, registry: Registry, settings: ServerSettings) -> Response:
    """Run the model on the request's inputs; what it takes and answers depends on its task (GET /v2/models/{name}).

    `parameters.lease` renews that holder's lease on the model. Tensors may travel in binary after the JSON, in
    either direction (the binary tensor data extension: the Inference-Header-Content-Length header,
    `binary_data_size`, `binary_data` and `binary_data_output`)."""
    header_length = request.headers.get(BINARY_HEADER)
    body = await read_body(request, settings, required=True, binary=header_length is not None)
    registry.ready(name)  # an unknown model is the first thing to say
    return await run_in_threadpool(answer_inference, registry, name, body, header_length)


def answer_inference(
    registry: ModelRegistry, name: str, body: bytes | memoryview, header_length: str | None
) -> Response:
    """The answer to an inference request's body (JSON, or JSON then binary tensors when `header_length`, the
    Inference-Header-Content-Length header, is given): run in a worker thread, the model's work blocking."""
    if header_length is not None:
        head, binary = split_binary(body, header_length)
        parsed = parse(head, InferRequest)
        attach_binary(parsed, binary)
    else:
        parsed = parse(body, InferRequest)
        unsent = [i.name for i in parsed.inputs if i.binary_size is not None]
        if unsent:
            raise InputMismatch(
                f"input {unsent[0]!r} says binary_data_size but the request has no "
                "Inference-Header-Content-Length header saying where its JSON ends"
            )
    outputs = chosen(registry.infer(name, parsed, binary=header_length is not None), parsed)
    binary_outputs = [in_binary(output.name, parsed) for output in outputs]
    if any(binary_outputs):
        content, length = binary_response(name, parsed.id, outputs, binary_outputs)
        finite([o for o, b in zip(outputs, binary_outputs, strict=True) if not b])
        return Response(content, media_type="application/octet-stream", headers={BINARY_HEADER: str(length)})
    answer = InferResponse(model_name=name, id=parsed.id, outputs=[o.as_json() for o in outputs])
    finite(answer.outputs)
    # Encoded here, in the worker thread, once: FastAPI would validate the answer again, then encode it on
    # the event loop.
    return Response(answer.model_dump_json(exclude_none=True), media_type="application/json")


INFER_PATH = re.compile(r"/v2/models/([^/]+)/infer")


class BinaryInference:
    """POST /v2/models/{name}/infer with the binary tensor data extension (the Inference-Header-Content-Length
    header), served as plain ASGI before FastAPI's routing: the same checks, answers and errors as the route
    `infer`, without the route matching, dependency solving and middleware of a FastAPI route, which cost a
    request about as much as 256 rows of a 200-tree forest (bench/RESULTS.md, "Tabular inference in binary").
    Every other request (JSON inference included) goes on to the app."""

    def __init__(self, app: ASGIApp, registry: ModelRegistry, settings: Settings):
        self.app = app
        self.registry = registry
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        matched = INFER_PATH.fullmatch(path[len(root) :] if root and path.startswith(root) else path)
        if matched is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        header_length = request.headers.get(BINARY_HEADER)
        if header_length is None:
            await self.app(scope, receive, send)
            return
        try:
            name = await _model_name(matched[1])
            body = await read_body(request, self.settings, required=True, binary=True)
            self.registry.ready(name)
            response = await run_in_threadpool(answer_inference, self.registry, name, body, header_length)
        except (ServerError, ModelError) as refused:
            response = refusal(refused)
        except Exception as exc:
            log.exception("binary inference on %s failed", path)
            response = unexpected(exc, self.registry.models_root)
        await response(scope, receive, send)


def chosen(outputs: list[InferOutput], request: InferRequest) -> list[InferOutput]:
    """The outputs the request names, in its order (all of them when it names none)."""
    if not request.outputs:
        return outputs
    by_name = {o.name: o for o in outputs}
    unknown = [o.name for o in request.outputs if o.name not in by_name]
    if unknown:
        raise InputMismatch(
            f"the request asks for output {unknown[0]!r}; the model answers {', '.join(map(repr, by_name))}"
        )
    return [by_name[o.name] for o in request.outputs]


def in_binary(name: str, request: InferRequest) -> bool:
    """Whether an output goes in binary: its own `binary_data`, else the request's `binary_data_output`."""
    for wanted in request.outputs or []:
        if wanted.name == name and wanted.binary is not None:
            return wanted.binary
    return request.parameters.binary_data_output


@router.post("/repository/index", response_model=list[IndexEntry])
async def repository_index(request: Request, registry: Registry, settings: ServerSettings) -> list[IndexEntry]:
    """Every model this server has known: READY, LOADING or UNAVAILABLE with the reason."""
    wanted = parse(await read_body(request, settings), IndexRequest, optional=True)
    return [
        IndexEntry(name=e.name, state=e.state, reason=e.reason)
        for e in registry.index()
        if e.state is ModelState.READY or not wanted.ready
    ]


@router.post("/repository/models/{name}/load", response_model=LoadResponse)
async def load(name: ModelName, request: Request, registry: Registry, settings: ServerSettings) -> LoadResponse:
    """Load a model for `parameters.task` from `parameters.source`: a Hugging Face id or a folder under the models
    root (transformers tasks), an .onnx file under the models root (tabular tasks).

    With `parameters.lease` (e.g. a run id) the model is held for that holder until it unloads with the
    same lease or the lease expires (`parameters.lease_ttl_s`); without one it stays until a plain unload.
    Loading a name that is loaded from another source or for another task is refused (409)."""
    parameters = parse(await read_body(request, settings), LoadRequest, optional=True).parameters
    entry = await run_in_threadpool(
        registry.load, name, parameters.source or name, parameters.task, parameters.lease, parameters.lease_ttl_s
    )
    return LoadResponse(
        name=name,
        state=entry.state,
        source=entry.source,
        task=entry.task,
        leases=len(entry.leases),
        pinned=entry.pinned,
        weight_bytes=entry.weight_bytes,
    )


@router.post("/repository/models/{name}/check", response_model=CheckResponse)
async def check(name: ModelName, request: Request, registry: Registry, settings: ServerSettings) -> CheckResponse:
    """Whether a load with these parameters (as `load` takes them) would find its model, asked without loading
    anything: `loadable`, where the model would be read from, or why not (an unknown source or task, a name loaded
    from another source). Not part of the protocol: the code location asks it before a run is launched."""
    parameters = parse(await read_body(request, settings), LoadRequest, optional=True).parameters
    source = parameters.source or name
    try:
        found_in = await run_in_threadpool(registry.check, name, source, parameters.task)
    except ModelError as refused:
        return CheckResponse(name=name, source=source, task=parameters.task, loadable=False, error=str(refused))
    return CheckResponse(name=name, source=source, task=parameters.task, loadable=True, found_in=found_in)


@router.post("/repository/models/{name}/unload", response_model=UnloadResponse)
async def unload(name: ModelName, request: Request, registry: Registry, settings: ServerSettings) -> UnloadResponse:
    """With `parameters.lease`: let go of that holder's lease; the model is unloaded when no lease holds it.
    Without: unload it outright, whoever holds it (the protocol's unload). The answer says how much memory the
    process holds before and after."""
    parameters = parse(await read_body(request, settings), UnloadRequest, optional=True).parameters
    done = await run_in_threadpool(registry.unload, name, parameters.lease)
    return UnloadResponse(
        name=name,
        state=done.state,
        leases=done.leases,
        resident_bytes_before=done.before,
        resident_bytes_after=done.after,
    )


@router.post("/repository/models/{name}/renew", response_model=RenewResponse)
async def renew(name: ModelName, request: Request, registry: Registry, settings: ServerSettings) -> RenewResponse:
    """Extend `parameters.lease` on a loaded model by `parameters.lease_ttl_s` (default: the lease's own length).
    Not part of the protocol: a holder that runs no inference for a while keeps its model with it."""
    parameters = parse(await read_body(request, settings, required=True), RenewRequest).parameters
    if parameters.lease is None:
        raise ServerError(422, "request body is not a valid RenewRequest: parameters.lease: the holder is required")
    lease = await run_in_threadpool(registry.renew, name, parameters.lease, parameters.lease_ttl_s)
    return RenewResponse(name=name, lease=parameters.lease, expires_in_s=max(0.0, lease.expires - registry.clock()))


def finite(outputs: list[InferOutput]) -> None:
    """InvalidInput when a float output holds NaN or an infinity: JSON cannot carry them."""
    for output in outputs:
        if output.datatype not in ("FP16", "FP32", "FP64"):
            continue
        array = output.array
        if not (bool(np.isfinite(array).all()) if array is not None else all(map(math.isfinite, output.data))):
            raise InvalidInput(
                f"the model's output {output.name!r} holds a value that is not a finite number; the "
                "protocol's JSON cannot carry it: check the inputs"
            )


def check_content_type(request: Request, required: bool, binary: bool = False) -> None:
    """415 unless the body is declared JSON; a route that takes no body may also get none, undeclared.

    A browser's cross-site "simple" request (text/plain, a form) cannot declare application/json without
    a CORS preflight, which this server never answers: no web page can load, unload or infer here.
    `binary`: the request has the Inference-Header-Content-Length header, which no page can send without a
    preflight either; its body is JSON then bytes, declared application/octet-stream, JSON, or not at all
    (Triton's own client declares none).
    """
    declared = request.headers.get("content-type")
    if binary:
        if declared is None:  # Triton's own client declares none
            return
        media_type = declared.split(";", 1)[0].strip().lower()
        if media_type not in ("application/octet-stream", "application/json"):
            raise ServerError(
                415,
                f"a binary-extension body is JSON then bytes, declared as Content-Type: "
                f"application/octet-stream (or application/json), not {declared[:100]!r}",
            )
        return
    if declared is None:
        length = request.headers.get("content-length")
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        if not required and not chunked and (length is None or length.strip() == "0"):
            return
        raise ServerError(415, "the request body must be JSON, declared as Content-Type: application/json")
    media_type = declared.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ServerError(
            415, f"the request body must be JSON, declared as Content-Type: application/json, not {declared[:100]!r}"
        )


async def read_body(
    request: Request, settings: Settings, required: bool = False, binary: bool = False
) -> bytes | memoryview:
    """Read at most the request limit; past it, keep reading (and dropping) up to the drain limit, then 413.

    Only a JSON body is read (415 otherwise), or with `binary` a binary-extension one; `required`: the route
    needs one."""
    check_content_type(request, required, binary)
    limit, drain = settings.max_request_bytes, settings.max_drain_bytes
    too_large = ServerError(
        413,
        f"request body is larger than the limit of {limit} bytes "
        "(CONSTELLATION_MODEL_SERVER_MAX_REQUEST_BYTES); send fewer images per request",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > drain:
        raise too_large
    if binary and declared.isdigit() and int(declared) <= limit:
        return await read_declared(request, int(declared))
    chunks: list[bytes] = []
    size = 0
    async for chunk in body_chunks(request):
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > drain:
            break
    if size > limit:
        raise too_large
    if size and request.headers.get("content-type") is None and not binary:
        raise ServerError(415, "the request body must be JSON, declared as Content-Type: application/json")
    return b"".join(chunks)


async def read_declared(request: Request, length: int) -> memoryview:
    """A body of a declared length read straight into one buffer: tensors of many megabytes are not copied again
    (joining chunks), and are read in place by NumPy."""
    buffer = bytearray(length)
    view = memoryview(buffer)
    size = 0
    async for chunk in body_chunks(request):
        if size + len(chunk) > length:
            raise ServerError(400, f"the request body is longer than its Content-Length ({length} bytes)")
        view[size : size + len(chunk)] = chunk
        size += len(chunk)
    return view[:size]


async def body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The request's body as it arrives; a client that goes before sending all of it is refused (400, which no one
    may read), not an error of ours."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise ServerError(400, "the client closed the connection before sending the whole request body") from None


def parse(body: bytes | memoryview, schema: type[Body], optional: bool = False) -> Body:
    """Validate a JSON body: 400 when it is not JSON, 422 naming each field that is wrong."""
    if isinstance(body, memoryview):  # a body read in place (read_declared): Pydantic reads bytes, not views
        body = body.tobytes()
    if optional and not body.strip():
        return schema()
    try:
        return schema.model_validate_json(body)
    except ValidationError as exc:
        problems = exc.errors(include_url=False)
        if any(p["type"] == "json_invalid" for p in problems):
            raise ServerError(400, f"request body is not valid JSON: {problems[0]['msg']}") from None
        details = "; ".join(f"{'.'.join(map(str, p['loc'])) or 'body'}: {p['msg']}" for p in problems[:5])
        raise ServerError(422, f"request body is not a valid {schema.__name__}: {details}") from None
