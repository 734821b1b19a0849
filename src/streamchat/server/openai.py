"""OpenAI Chat Completions endpoint: ``POST /v1/chat/completions`` (streaming and not).

The same pipeline as the Anthropic module; only the codec differs. Validation messages name the
parameter the client sent (``max_completion_tokens``, ``stop``), not the canonical one.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import StreamchatError
from ..wire import openai as wire
from .auth import check_api_key
from .common import ServerConfig, open_events, read_json
from .replies import stream_response
from .streaming import (
    as_streamchat_error,
    builder,
    respond_when_complete,
)

DEFAULT_MAX_TOKENS = 1024  # Chat Completions has no required limit; ours keeps replies bounded


def error_response(error: Exception) -> JSONResponse:
    status, body = wire.error_response(as_streamchat_error(error))
    return JSONResponse(body, status_code=status)


def routes(config: ServerConfig) -> list[Route]:
    async def chat_completions(request: Request) -> Response:
        options = wire.ChatOptions()
        try:
            check_api_key(request, config)
            kwargs, options = wire.parse_chat_request(await read_json(request, config))
            kwargs.setdefault("max_tokens", min(DEFAULT_MAX_TOKENS, config.max_tokens_limit))
            build = builder(kwargs, config)
            events = await open_events(config, kwargs["model"], build, request.headers)
        except StreamchatError as error:
            return error_response(options.rename(error))
        except Exception as error:
            return error_response(error)
        model = kwargs["model"]
        if options.stream:
            encoder = wire.ChunkEncoder(model, include_usage=options.include_usage)
            encode, encode_error = encoder.encode, wire.encode_error
            return await stream_response(request, "openai", events, encode, encode_error)
        render = lambda message: JSONResponse(wire.completion_body(message, model))  # noqa: E731
        return await respond_when_complete(request, events, render, error_response)

    return [Route("/v1/chat/completions", chat_completions, methods=["POST"])]
