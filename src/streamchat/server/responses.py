"""OpenAI Responses endpoints: ``POST /v1/responses`` (streaming and not), ``GET`` and
``DELETE /v1/responses/{id}``.

The same pipeline as Chat Completions; only the codec differs. A stored response (``store``,
on by default as in OpenAI's API) keeps its whole conversation, so ``previous_response_id``
continues it without the client sending the history again.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import NotFoundError, StreamchatError
from ..events import Message
from ..request import MessageRequest
from ..wire import responses as wire
from .common import ServerConfig, open_events, read_json
from .openai import DEFAULT_MAX_TOKENS, error_response
from .streaming import (
    EventStreamResponse,
    builder,
    check_api_key,
    encode_stream,
    respond_when_complete,
)

# canonical request field -> the Responses parameter a validation error should name
PARAMS = {
    "max_tokens": "max_output_tokens",
    "output_format": "text.format",
    "system": "instructions",
}
STORED_RESPONSES = 1000  # kept per server process, oldest dropped first


class ResponseStore:
    """Stored responses of this server process: the response body and its conversation
    (Anthropic-shaped messages, this response's output included), bounded, oldest out first."""

    def __init__(self, capacity: int = STORED_RESPONSES) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, body: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
        with self._lock:
            self._items[body["id"]] = (body, conversation)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, response_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        with self._lock:
            return self._items.get(response_id)

    def delete(self, response_id: str) -> bool:
        with self._lock:
            return self._items.pop(response_id, None) is not None


def conversation(request: MessageRequest, message: Message) -> list[dict[str, Any]]:
    """The request's turns and the reply, as messages a later request can start from."""
    turns = [
        {"role": turn.role, "content": [block.to_dict() for block in turn.parts]}
        for turn in request.messages
    ]
    reply = [block.to_dict() for block in message.content]
    return [*turns, {"role": "assistant", "content": reply}] if reply else turns


def rename(error: StreamchatError) -> StreamchatError:
    """Name the Responses parameter in a validation message (``max_tokens`` -> ...)."""
    name, sep, rest = error.message.partition(":")
    head = name.split(".", 1)[0]
    if sep and head in PARAMS:
        error.message = PARAMS[head] + name[len(head) :] + sep + rest
        error.args = (error.message,)
    return error


def routes(config: ServerConfig) -> list[Route]:
    store = ResponseStore()

    def not_found(response_id: str) -> NotFoundError:
        return NotFoundError(f"Response with id {response_id!r} not found.")

    async def create(request: Request) -> Response:
        built: list[MessageRequest] = []
        try:
            check_api_key(request, config)
            body = await read_json(request, config)
            previous = body.get("previous_response_id") if isinstance(body, Mapping) else None
            history = None
            if isinstance(previous, str):
                stored = store.get(previous)
                if stored is None:
                    raise not_found(previous)
                history = stored[1]
            kwargs, options = wire.parse_responses_request(body, history)
            kwargs.setdefault("max_tokens", min(DEFAULT_MAX_TOKENS, config.max_tokens_limit))
            build = builder(kwargs, config)

            def build_and_keep(model: str) -> MessageRequest:
                built.append(build(model))
                return built[-1]

            events = await open_events(config, kwargs["model"], build_and_keep, request.headers)
        except StreamchatError as error:
            return error_response(rename(error))
        except Exception as error:
            return error_response(error)
        model, created = kwargs["model"], int(time.time())

        def keep(message: Message) -> dict[str, Any]:
            final = wire.final_body(message, model, options.echo, created)
            if options.store and message.stop_reason is not None:
                store.put(final, conversation(built[0], message))
            return final

        if options.stream:
            encoder = wire.ResponseStreamEncoder(model, options.echo, created)

            async def frames() -> AsyncIterator[bytes]:
                async for frame in encode_stream(events, encoder.encode, encoder.encode_error):
                    yield frame
                if encoder.message is not None:
                    keep(encoder.message)

            return EventStreamResponse(frames(), encode_error=encoder.encode_error)
        render = lambda message: JSONResponse(keep(message))  # noqa: E731
        return await respond_when_complete(request, events, render, error_response)

    async def retrieve(request: Request) -> Response:
        response_id = request.path_params["response_id"]
        try:
            check_api_key(request, config)
            stored = store.get(response_id)
            if stored is None:
                raise not_found(response_id)
        except Exception as error:
            return error_response(error)
        return JSONResponse(stored[0])

    async def delete(request: Request) -> Response:
        response_id = request.path_params["response_id"]
        try:
            check_api_key(request, config)
            if not store.delete(response_id):
                raise not_found(response_id)
        except Exception as error:
            return error_response(error)
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})

    return [
        Route("/v1/responses", create, methods=["POST"]),
        Route("/v1/responses/{response_id}", retrieve, methods=["GET"]),
        Route("/v1/responses/{response_id}", delete, methods=["DELETE"]),
    ]
