"""The Starlette application: one module per wire protocol, mounted side by side."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .common import ServerConfig


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app(config: ServerConfig | None = None) -> Starlette:
    config = config or ServerConfig()
    routes: list = [Route("/healthz", healthz)]
    # Each protocol module contributes routes(config) -> list[Route]; imported lazily so a
    # missing optional part never breaks the others.
    for name in ("anthropic", "openai", "models", "bedrock", "history_api"):
        module = __import__(f"streamchat.server.{name}", fromlist=["routes"])
        routes += module.routes(config)
    app = Starlette(routes=routes)
    app.state.config = config
    return app
