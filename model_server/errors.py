"""Every answer other than success is JSON `{"error": "message"}`, the V2 protocol's error shape."""

from __future__ import annotations

import os

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from model_server import exceptions as reg
from model_server.private_paths import hide_folders

# What each refusal of the registry deserves.
STATUS = {
    reg.InvalidRequest: 400,
    reg.LoadFailed: 400,
    reg.InputMismatch: 400,
    reg.UnknownModel: 404,
    reg.SourceNotFound: 404,
    reg.InvalidInput: 422,
    reg.ModelLoading: 503,
    reg.ModelConflict: 409,
    reg.TooManyModels: 429,
    reg.OutOfModelMemory: 507,
    reg.ImageTooLarge: 413,
}


class ServerError(Exception):
    """An answer other than success, with its status code."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def error(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def refusal(exc: ServerError | reg.ModelError) -> JSONResponse:
    """The answer to a ServerError or a refusal of the registry (the route served outside FastAPI's routing,
    model_server/routes.py's BinaryInference, answers with this too)."""
    if isinstance(exc, ServerError):
        return error(exc.status_code, exc.message)
    status = STATUS.get(type(exc), 400)
    # 503 tells a client to retry: the model is loading.
    return error(status, str(exc), {"Retry-After": "1"} if status == 503 else None)


def unexpected(exc: Exception, models_root: str | os.PathLike[str] | None) -> JSONResponse:
    """A bug of ours must still answer JSON; 500 is reserved for exactly that case. Never with our folders."""
    said = hide_folders(str(exc), [(models_root, "the models root")])
    return error(500, f"internal error ({type(exc).__name__}: {said}); the model server's log has details")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServerError)
    async def _server_error(_: Request, exc: ServerError) -> JSONResponse:
        return refusal(exc)

    @app.exception_handler(reg.ModelError)
    async def _model_error(_: Request, exc: reg.ModelError) -> JSONResponse:
        return refusal(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in exc.errors())
        return error(422, f"the request is not valid: {details}")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"no such endpoint: {request.method} {request.url.path}" if exc.status_code == 404 else exc.detail
        return error(exc.status_code, str(message))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected(exc, getattr(request.app.state.registry, "models_root", None))
