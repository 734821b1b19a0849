"""The Starlette application: one module per wire protocol, mounted side by side."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..errors import NotFoundError
from . import anthropic, bedrock, metrics, openai
from .common import ServerConfig
from .guard import BrowserGuard


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def not_found(request: Request, exc: HTTPException) -> Response:
    """An unknown path under an API's prefix (e.g. a model id no route matches) gets a 404 in
    that API's error shape, which its SDK can read; other paths get Starlette's plain one."""
    path = request.url.path
    if path.startswith("/model/"):
        render = bedrock.error_response
    elif path.startswith(("/v1/chat/", "/v1/responses")):
        render = openai.error_response
    elif path.startswith(("/v1/", "/api/")):
        render = anthropic.error_response
    else:
        return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    return render(NotFoundError(f"no such endpoint: {request.method} {path}"))


def create_app(config: ServerConfig | None = None) -> Starlette:
    config = config or ServerConfig()
    routes: list = [Route("/healthz", healthz)]
    # Each module contributes routes(config) -> list[Route].
    modules = ("anthropic", "openai", "responses", "models", "bedrock", "history_api", "metrics")
    for name in (*modules, "web"):
        module = __import__(f"streamchat.server.{name}", fromlist=["routes"])
        routes += module.routes(config)
    app = Starlette(
        routes=routes,
        exception_handlers={404: not_found},
        middleware=[Middleware(BrowserGuard, loopback_only=config.loopback_only)],
    )
    metrics.install(app)  # GET /metrics: this app's own registry, fed by open_events
    app.state.config = config
    return app
