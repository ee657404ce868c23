"""Every error the gateway answers is JSON with `status: failure` and a `message`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.runs import clip


class ApiError(Exception):
    """An answer other than success, with the status code it deserves."""

    def __init__(self, status_code: int, message: str, errors: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.errors = errors


def failure(status_code: int, message: str, errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    # Messages can quote what a client or an archive sent (a 100 MB member name was served whole):
    # each is cut to MAX_MESSAGE_CHARS, saying how much was cut.
    body: dict[str, Any] = {"status": "failure", "message": clip(message)}
    if errors is not None:
        body["errors"] = [{k: clip(v) if isinstance(v, str) else v for k, v in e.items()} for e in errors]
    headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
    return JSONResponse(body, status_code=status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return failure(exc.status_code, exc.message, exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"path": "/" + "/".join(str(p) for p in e.get("loc", ())), "message": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        return failure(422, "the request is not valid", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return failure(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # A bug of ours must still answer JSON; 500 is reserved for exactly that case.
        return failure(500, f"internal error ({type(exc).__name__}); the gateway's log has details")
