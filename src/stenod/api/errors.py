"""One mapping from errors to HTTP: OpenAI's error shape ``{"error": {message, type, param, code}}``
for every failure, with the status on the domain exception itself."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from stenod.errors import AuthenticationError, DatabaseUnavailableError, StenodError
from stenod.storage.sql import is_database_unavailable

logger = logging.getLogger(__name__)


def error_body(message: str, *, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(exc: StenodError) -> JSONResponse:
    headers: dict[str, str] = {}
    retry_after_s = getattr(exc, "retry_after_s", None)
    if isinstance(retry_after_s, (int, float)):
        headers["Retry-After"] = str(max(1, int(math.ceil(retry_after_s))))
    headers.update(getattr(exc, "headers", None) or {})
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = 'Bearer realm="stenod"'  # RFC 6750: say how to authenticate
    return JSONResponse(
        error_body(exc.message, error_type=exc.error_type, param=exc.param, code=exc.code),
        status_code=exc.status_code,
        headers=headers,
    )


async def _stenod_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StenodError)
    return error_response(exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "header", "path")]
    param = ".".join(loc) or None
    message = f"{param}: {first.get('msg', 'invalid value')}" if param else str(first.get("msg", "invalid request"))
    return JSONResponse(
        error_body(message, error_type="invalid_request_error", param=param, code="invalid_parameter"),
        status_code=422,
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return JSONResponse(
        error_body(str(exc.detail), error_type=error_type, code=str(exc.status_code)),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    logger.error("unhandled error (request %s)", request_id, exc_info=exc)
    return JSONResponse(
        error_body(f"internal server error (request id {request_id})", error_type="server_error", code="internal_error"),
        status_code=500,
    )


DATABASE_RETRY_AFTER_S = 5.0


def database_unavailable_error() -> DatabaseUnavailableError:
    return DatabaseUnavailableError("the job database cannot be reached; retry later",
                                    retry_after_s=DATABASE_RETRY_AFTER_S)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """A database outage (PostgreSQL restarting, a failover, a dropped connection) is a 503 with
    Retry-After like any other unavailable dependency; every write is one transaction, so nothing
    was half-written. Other SQL errors are bugs: 500."""
    if not is_database_unavailable(exc):
        return await _unexpected_error(request, exc)
    logger.warning("database unavailable (request %s): %s", getattr(request.state, "request_id", None),
                   type(exc).__name__)
    return error_response(database_unavailable_error())


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StenodError, _stenod_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(SQLAlchemyError, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
