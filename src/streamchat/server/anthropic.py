"""Anthropic Messages endpoints: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Each route is parse (wire codec) -> provider -> encode; errors before streaming get the API's
status and ``{"type": "error", ...}`` body, errors after it an ``event: error`` frame.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..wire import anthropic as wire
from .auth import check_api_key
from .common import ServerConfig, count_prompt_tokens, open_events, read_json
from .replies import stream_response
from .streaming import (
    as_streamchat_error,
    builder,
    respond_when_complete,
)


def error_response(error: Exception) -> JSONResponse:
    status, body = wire.error_response(as_streamchat_error(error))
    return JSONResponse(body, status_code=status)


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
            encode, encode_error = wire.encode_event, wire.encode_error_event
            return await stream_response(request, "anthropic", events, encode, encode_error)
        render = lambda message: JSONResponse(wire.message_body(message))  # noqa: E731
        return await respond_when_complete(request, events, render, error_response)

    async def count_tokens(request: Request) -> Response:
        try:
            check_api_key(request, config)
            kwargs = wire.parse_count_tokens_request(await read_json(request, config))
            # no max_tokens here: the limit, so that a thinking budget below it validates
            limit = {"max_tokens": config.max_tokens_limit}
            message_request = builder({**kwargs, **limit}, config)(kwargs["model"])
            tokens = await count_prompt_tokens(config, kwargs["model"], message_request)
        except Exception as error:
            return error_response(error)
        return JSONResponse(wire.count_tokens_body(tokens))

    return [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
    ]
