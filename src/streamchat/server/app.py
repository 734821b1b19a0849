"""The Starlette application: one module per wire protocol, mounted side by side.

Also what a load balancer needs from a replica: ``/healthz`` (the process answers),
``/readyz`` (it should get traffic: history database and default provider reachable, not
draining) and an ``x-streamchat-replica`` header on every answer naming the replica.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import APIError, HistoryError, NotFoundError, StreamchatError
from ..history.shared import shared_store
from ..providers import get_provider
from ..recording.commit import target_commit
from ..wire import anthropic as anthropic_wire
from ..wire import openai as openai_wire
from . import anthropic, bedrock, metrics, openai, replies
from .common import ServerConfig
from .guard import BrowserGuard

REPLICA_HEADER = "x-streamchat-replica"
PROBE_SECONDS = 2.0  # a readiness check slower than this counts as a failure
# protocol (metrics.PROTOCOL_PREFIXES) -> its error body, for a 404 its SDK can read
ERROR_RESPONSES: dict[str, Callable[[Exception], Response]] = {
    "anthropic": anthropic.error_response,
    "openai": openai.error_response,
    "responses": openai.error_response,
    "bedrock": bedrock.error_response,
}
# protocol -> the in-stream error frame a resumed stream ends with if the server stops under it
ERROR_FRAMES: dict[str, Callable[[StreamchatError], bytes]] = {
    "anthropic": anthropic_wire.encode_error_event,
    "openai": openai_wire.encode_error,
}


def replica_name() -> str | None:
    """``$STREAMCHAT_REPLICA`` (a deployment sets it, e.g. to the pod's name), else none."""
    return os.environ.get("STREAMCHAT_REPLICA") or None


@dataclass(slots=True)
class Lifecycle:
    """What ``/readyz`` and the metrics say about this replica; ``serve`` sets ``draining``
    when SIGTERM arrives."""

    replica: str  # this replica's name; the host name when none was given
    draining: bool = False


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _history_ready(config: ServerConfig) -> None:
    store = await asyncio.to_thread(shared_store, config.history_path)
    await asyncio.to_thread(store.ping)


async def _provider_ready(config: ServerConfig) -> None:
    """A remote default provider (an OpenAI-compatible server, the Anthropic API) must accept
    a TCP connection; an embedded model's scheduler must be alive and stepping."""
    provider = get_provider(config.default_model, config.local)
    health = getattr(provider, "health", None)
    if health is not None and (trouble := health()) is not None:
        raise APIError(trouble)
    base = getattr(getattr(provider, "client", None), "base_url", None)
    if base is None:
        return
    parts = urlsplit(str(base))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    _, writer = await asyncio.open_connection(parts.hostname, port)
    writer.close()


async def readyz(request: Request) -> JSONResponse:
    """200 when this replica should get traffic, else 503 with what is wrong, per check."""
    config: ServerConfig = request.app.state.config
    lifecycle: Lifecycle = request.app.state.lifecycle
    checks: dict[str, str] = {}
    if lifecycle.draining:
        checks["draining"] = "shutting down: finishing open streams"
    probes = {"provider": _provider_ready(config)}
    if config.history_path:
        probes["history"] = _history_ready(config)
    for name, probe in probes.items():
        try:
            await asyncio.wait_for(probe, PROBE_SECONDS)
        except TimeoutError:
            checks[name] = f"no answer within {PROBE_SECONDS:g} s"
        except HistoryError as error:
            checks[name] = error.message
        except Exception as error:
            checks[name] = " ".join(str(error).split()) or type(error).__name__
    body = {"status": "unready" if checks else "ready", "replica": lifecycle.replica}
    if checks:
        body["failing"] = checks
    return JSONResponse(body, status_code=503 if checks else 200)


class ReplicaHeader:
    """Pure ASGI: names the replica on every response (how a client behind a load balancer,
    or a test, tells the replicas apart); the host name when none was given."""

    def __init__(self, app: ASGIApp, replica: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica.encode("latin-1", "replace"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), self.header]
            await send(message)

        await self.app(scope, receive, named)


async def not_found(request: Request, exc: HTTPException) -> Response:
    """An unknown path under an API's prefix (e.g. a model id no route matches) gets a 404 in
    that API's error shape, which its SDK can read; other paths get Starlette's plain one."""
    path = request.url.path
    protocol = metrics.protocol_of(path)
    if protocol == "other" and path.startswith(("/v1/", "/api/")):
        protocol = "anthropic"  # the rest of the API speaks Anthropic's error shape
    render = ERROR_RESPONSES.get(protocol)
    if render is None:
        return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    return render(NotFoundError(f"no such endpoint: {request.method} {path}"))


def create_app(config: ServerConfig | None = None, *, replica: str | None = None) -> Starlette:
    config = config or ServerConfig()
    replica = replica or replica_name()
    lifecycle = Lifecycle(replica or socket.gethostname())
    routes: list = [Route("/healthz", healthz), Route("/readyz", readyz)]
    # Each module contributes routes(config) -> list[Route].
    modules = ("anthropic", "openai", "responses", "models", "bedrock", "history_api", "metrics")
    for name in (*modules, "web"):
        module = __import__(f"streamchat.server.{name}", fromlist=["routes"])
        routes += module.routes(config)
    routes += replies.routes(config, ERROR_RESPONSES, ERROR_FRAMES)
    app = Starlette(
        routes=routes,
        exception_handlers={404: not_found},
        middleware=[
            Middleware(ReplicaHeader, replica=lifecycle.replica),
            Middleware(BrowserGuard, loopback_only=config.loopback_only),
        ],
    )
    # GET /metrics: this app's own registry, fed by open_events; with a replica named, its
    # every sample carries the label replica
    metrics.install(app, replica=replica)
    app.state.config = config
    app.state.lifecycle = lifecycle
    app.state.replies = replies.Replies(config, lifecycle.replica, ERROR_FRAMES)
    if config.history_path:  # now: what a previous process spooled drains from the start
        target_commit(config.history_path, config.history_commit_seconds)
    return app
