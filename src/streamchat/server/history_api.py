"""The history as JSON for the web page: list, create, read and delete stored conversations, and
read a stored image's or document's bytes (by SHA-256, as the conversation's blocks name them).

Always mounted, so a client can tell "history is off" (404 with that message) from a missing
server; behind ``--api-key`` like every other endpoint, since conversations are private.
Errors use the Anthropic error shape; database work runs in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import ConversationNotFoundError, InvalidRequestError, NotFoundError
from ..history import Store
from ..history.shared import shared_store
from ..providers import get_provider
from .auth import check_api_key
from .common import ServerConfig, read_json, route_model
from .streaming import as_streamchat_error

MAX_LIMIT = 200
SHA256 = re.compile(r"^[0-9a-f]{64}$")

Handler = Callable[[Request, Store], Awaitable[Any]]


def _conversation_id(request: Request) -> int:
    text = request.path_params["id"]
    if not text.isdigit():
        raise ConversationNotFoundError(f"no conversation {text}")
    return int(text)


def routes(config: ServerConfig) -> list[Route]:
    def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Auth, the store, errors as JSON: what every history endpoint shares."""

        async def run(request: Request) -> Response:
            try:
                check_api_key(request, config)
                if not config.history_path:
                    raise NotFoundError("history is off on this server (start it with --history)")
                store = await asyncio.to_thread(shared_store, config.history_path)
                result = await handler(request, store)
                return result if isinstance(result, Response) else JSONResponse(result)
            except Exception as error:
                failure = as_streamchat_error(error)
                return JSONResponse(failure.to_dict(), status_code=failure.status_code)

        return run

    async def list_conversations(request: Request, store: Store) -> Any:
        limit = request.query_params.get("limit", "50")
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
            raise InvalidRequestError(f"expected an integer from 1 to {MAX_LIMIT}", path="limit")
        return {"data": await asyncio.to_thread(store.conversations, int(limit))}

    async def create_conversation(request: Request, store: Store) -> Any:
        """An empty conversation that a client (the web page) then names in the
        ``x-streamchat-conversation`` header of its requests, so each turn is logged to it."""
        body = await read_json(request, config)
        model = body.get("model") if isinstance(body, dict) else None
        if model is not None and not isinstance(model, str):
            raise InvalidRequestError("expected a string", path="model")
        provider = get_provider(route_model(config, model), config.local).name
        conversation_id = await asyncio.to_thread(
            store.new_conversation,
            model=model or config.default_model,
            provider=provider,
            source="web",
        )
        return await asyncio.to_thread(store.conversation, conversation_id)

    async def get_conversation(request: Request, store: Store) -> Any:
        return await asyncio.to_thread(store.conversation, _conversation_id(request))

    async def delete_conversation(request: Request, store: Store) -> Any:
        conversation_id = _conversation_id(request)
        await asyncio.to_thread(store.delete, conversation_id)
        return {"id": conversation_id, "type": "conversation_deleted", "deleted": True}

    async def get_attachment(request: Request, store: Store) -> Any:
        sha256 = request.path_params["sha256"]
        found = await asyncio.to_thread(store.attachment, sha256) if SHA256.match(sha256) else None
        if found is None:
            raise NotFoundError(f"no attachment {sha256}")
        media_type, data = found
        immutable = {"Cache-Control": "private, max-age=31536000, immutable"}  # content-addressed
        return Response(data, media_type=media_type, headers=immutable)

    return [
        Route("/api/attachments/{sha256}", endpoint(get_attachment), methods=["GET"]),
        Route("/api/conversations", endpoint(list_conversations), methods=["GET"]),
        Route("/api/conversations", endpoint(create_conversation), methods=["POST"]),
        Route("/api/conversations/{id}", endpoint(get_conversation), methods=["GET"]),
        Route("/api/conversations/{id}", endpoint(delete_conversation), methods=["DELETE"]),
    ]
