"""The HTTP gateway's Starlette app: the route modules (the HTTP dialects), the OpenAPI description, the explorer's
static pages and CORS.

A route module is a module of this package with two functions: `routes(upstream) -> list[BaseRoute]` (its Starlette
routes, calling the gRPC path through `upstream`) and `openapi(schemas) -> dict` (its paths in the description).
Serving one more dialect is its module and one line in `ROUTE_MODULES`; a route module's paths must not start with a
dotted service name (`/embedsvc.v1...`, which the Connect routes claim) nor shadow another module's.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from embedsvc.settings import Settings
from embedsvc.transport.http import connect, openai, openapi, tei
from embedsvc.transport.http.upstream import Upstream


class RouteModule(Protocol):
    """An HTTP dialect served by the gateway: its routes, and its part of the OpenAPI description."""

    def routes(self, upstream: Upstream) -> list[BaseRoute]: ...

    def openapi(self, schemas: dict[str, Any]) -> dict[str, Any]: ...


# The HTTP dialects, one line each: the API itself (Connect), OpenAI's /v1/embeddings, text-embeddings-inference's.
ROUTE_MODULES: tuple[RouteModule, ...] = (connect, openai, tei)


def build_app(settings: Settings, grpc_target: str, modules: tuple[RouteModule, ...] = ROUTE_MODULES) -> Starlette:
    """The app: every route module's routes, calling the gRPC server at `grpc_target`."""
    upstream = Upstream(settings, grpc_target)
    description = json.dumps(openapi.document(modules)).encode()

    async def openapi_json(_request: Request) -> Response:
        return Response(description, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await upstream.open()
        try:
            yield
        finally:
            await upstream.close()

    explorer = resources.files("embedsvc.transport") / "explorer"
    routes: list[BaseRoute] = [
        Route("/", lambda _r: RedirectResponse("/explorer/"), methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Mount("/explorer", StaticFiles(directory=str(explorer), html=True), name="explorer"),
    ]
    for module in modules:
        routes += module.routes(upstream)
    middleware = []
    if settings.http_cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.http_cors_origins),
                allow_methods=["POST", "GET"],
                # Connect's own headers (connectrpc.com/docs/cors), the key, and the caller's request id.
                allow_headers=[
                    "authorization",
                    "content-type",
                    "connect-protocol-version",
                    "connect-timeout-ms",
                    "x-user-agent",
                    "x-request-id",
                ],
                expose_headers=["retry-after"],
                max_age=7200,
            )
        )
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
