"""Anthropic Messages endpoints: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Each route is parse (wire codec) -> provider -> encode; errors before streaming get the API's
status and ``{"type": "error", ...}`` body, errors after it an ``event: error`` frame.
"""

from __future__ import annotations

import asyncio
import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..providers import get_provider
from ..request import MessageRequest
from ..wire import anthropic as wire
from .common import ServerConfig, open_events, read_json, route_model
from .streaming import (
    EventStreamResponse,
    as_streamchat_error,
    builder,
    check_api_key,
    encode_stream,
    respond_when_complete,
)


def error_response(error: Exception) -> JSONResponse:
    status, body = wire.error_response(as_streamchat_error(error))
    return JSONResponse(body, status_code=status)


def estimate_tokens(request: MessageRequest) -> int:
    """About four characters a token: only for providers that cannot count exactly. Every
    block counts (tool calls and results, thinking), and so do the system prompt and tools."""
    chars = len(request.system or "")
    for turn in request.messages:
        for block in turn.parts:
            if block.type == "tool_use":
                chars += len(block.name) + len(json.dumps(block.input))
            elif block.type == "thinking":
                chars += len(block.thinking)
            else:  # text, tool_result
                chars += len(block.text)
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description) + len(json.dumps(tool.input_schema))
    return max(1, round(chars / 4))


def routes(config: ServerConfig) -> list[Route]:
    async def messages(request: Request) -> Response:
        try:
            check_api_key(request, config)
            kwargs, stream = wire.parse_messages_request(await read_json(request, config))
            build = builder(kwargs, config)
            events = await open_events(config, kwargs["model"], build, request.headers)
        except Exception as error:
            return error_response(error)
        if stream:
            return EventStreamResponse(
                encode_stream(events, wire.encode_event, wire.encode_error_event),
                encode_error=wire.encode_error_event,
            )
        render = lambda message: JSONResponse(wire.message_body(message))  # noqa: E731
        return await respond_when_complete(request, events, render, error_response)

    async def count_tokens(request: Request) -> Response:
        try:
            check_api_key(request, config)
            kwargs = wire.parse_count_tokens_request(await read_json(request, config))
            # no max_tokens here: the limit, so that a thinking budget below it validates
            limit = {"max_tokens": config.max_tokens_limit}
            message_request = builder({**kwargs, **limit}, config)(kwargs["model"])
            provider = get_provider(route_model(config, kwargs["model"]))
            count = getattr(provider, "count_tokens", None)
            if count is None:
                tokens = estimate_tokens(message_request)
            else:  # may load a model or call a remote API: keep the event loop free
                tokens = await asyncio.to_thread(count, message_request)
        except Exception as error:
            return error_response(error)
        return JSONResponse(wire.count_tokens_body(tokens))

    return [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ]
