"""The Starlette application: /graphql, /export, /ingest/v1, /healthz, /readyz, /metrics,
/openapi.json."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from zixly.container import Services
from zixly.core.errors import UnavailableError
from zixly.core.metrics import REGISTRY, metrics_access
from zixly.graphql.compiled.endpoint import CompiledGraphQL
from zixly.graphql.schema import build_schema
from zixly.graphql.view import ZixlyGraphQL
from zixly.http.editor_proxy import editor_mount
from zixly.http.export import export_financials_csv
from zixly.http.ingest import PREFIX as INGEST_PREFIX
from zixly.http.ingest import ingest_mount
from zixly.http.invitation_page import invitation_routes
from zixly.http.middleware import (
    AuthRateLimitMiddleware,
    BodyLimitMiddleware,
    RequestContextMiddleware,
    error_response,
    routing_error_response,
)
from zixly.http.oauth_callback import oauth_routes
from zixly.http.openapi import openapi_json

READY_TIMEOUT = 2.0


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    services: Services = request.app.state.services
    checks: dict[str, str] = {}

    async def database() -> None:
        async with services.db.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def redis() -> None:
        await services.redis.ping()

    for name, probe in (("database", database), ("redis", redis)):
        try:
            await asyncio.wait_for(probe(), READY_TIMEOUT)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
        headers={} if ready else {"Retry-After": str(UnavailableError.default_retry_after)},
    )


async def metrics(request: Request) -> Response:
    """Prometheus exposition, for the operator's scraper only (see ``metrics_access``)."""
    services: Services = request.app.state.services
    refused = metrics_access(services.settings, request.headers.get("authorization"))
    if refused is not None:
        return error_response(refused, request.scope.get("state", {}).get("request_id", ""))
    return PlainTextResponse(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def create_app(services: Services) -> Starlette:
    settings = services.settings
    graphql = ZixlyGraphQL(build_schema(settings), services)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await services.close()

    app = Starlette(
        routes=[
            # Every method reaches the view: anything but GET and POST is a GraphQL error (405).
            Route("/graphql", CompiledGraphQL(graphql)),
            WebSocketRoute("/graphql", graphql),
            *(graphql.ide.routes() if settings.graphiql else ()),
            Route("/export/financials.csv", export_financials_csv, methods=["GET"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            *oauth_routes(),
            *invitation_routes(),
            editor_mount(services),
            ingest_mount(services),
        ],
        middleware=[
            Middleware(RequestContextMiddleware),
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-Zixly-Tenant", "X-Request-ID"],
                expose_headers=[
                    "X-Request-ID",
                    "X-RateLimit-Limit",
                    "X-RateLimit-Remaining",
                    "X-RateLimit-Reset",
                    "Retry-After",
                ],
                max_age=600,
            ),
            Middleware(
                BodyLimitMiddleware,
                max_bytes=settings.max_body_bytes,
                exempt_prefixes=(INGEST_PREFIX + "/",),
            ),
            Middleware(AuthRateLimitMiddleware, services=services),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: routing_error_response},
    )
    app.state.services = services
    return app
