"""Every error is a JSON body ``{"detail", "code"}``; bad input never becomes a 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from model.imaging import PHOTO_TYPE_NAMES

log = logging.getLogger(__name__)

# What each error status means on this API; every one has the body ErrorResponse {detail, code}.
ERROR_MEANINGS = {
    400: "the body is not parseable JSON",
    401: "missing or wrong X-API-Key",
    403: "a path outside the catalogue roots",
    404: "no such job or item",
    413: "the upload is over the size limit",
    415: f"not multipart/form-data, or not a {PHOTO_TYPE_NAMES} photo",
    422: "invalid input; `code` says which (invalid_request, missing_image, undecodable_image, ...)",
    503: "not ready, overloaded, the job queue unavailable, or (Ray Serve) the replica lost; see Retry-After",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each with the ErrorResponse body."""
    from app.schemas import ErrorResponse

    return {code: {"model": ErrorResponse, "description": ERROR_MEANINGS[code]} for code in codes}


class ServiceError(Exception):
    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The body every error has: {"detail", "code"}."""
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(422, "invalid_request", problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, "http_error", str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error")
