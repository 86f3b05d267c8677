"""The local AI Core's ASGI app: one :class:`LocalAICore`, the error answers, ``/healthz``, and
one router per area (token, admin, lm, deployments, inference), in that order."""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from labkit.local.aicore import admin, deployments, inference, lm, tokens
from labkit.local.aicore.common import API_VERSION, SERVICE, ApiError, bad, log
from labkit.local.aicore.core import LocalAICore, Settings
from labkit.local.aicore.deps import error_response


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(request, exc)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return error_response(request, bad(f"invalid request: {where} {first.get('msg', '')}".strip()))


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    message = "no such path" if exc.status_code == 404 else str(exc.detail)
    return error_response(
        request, ApiError(exc.status_code, f"{message}: {request.method} {request.url.path}")
    )


async def _bug(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return error_response(
        request, ApiError(500, f"internal error ({type(exc).__name__})", "InternalError")
    )


def healthz() -> dict[str, Any]:
    return {
        "status": "READY",
        "message": "the local AI Core is up",
        "service": SERVICE,
        "apiVersion": API_VERSION,
    }


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app of the local AI Core."""
    core = LocalAICore(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        app.state.http = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=60.0),
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256),
            trust_env=False,  # the predictors are on loopback: never through a proxy
        )
        core.startup()
        try:
            yield
        finally:
            await app.state.http.aclose()
            core.shutdown()

    app = FastAPI(
        title="labkit local AI Core",
        version=API_VERSION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.core = core
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _bug)
    app.add_api_route("/healthz", healthz, methods=["GET"])
    for area in (tokens, admin, lm, deployments, inference):
        app.include_router(area.router)
    return app
