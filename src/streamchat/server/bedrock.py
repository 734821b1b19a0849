"""Bedrock Runtime endpoints: ``/model/{modelId}/`` + converse, converse-stream, invoke and
invoke-with-response-stream.

Unmodified ``boto3.client("bedrock-runtime", endpoint_url=...)`` and
``anthropic.AnthropicBedrock(base_url=...)`` talk to these. Each route is parse (wire codec) ->
provider -> encode; errors before streaming get Bedrock's status and ``x-amzn-ErrorType``,
errors after it an eventstream exception message.

Auth: clients sign requests with SigV4, whose secret the server cannot know, so with
``--api-key`` set the server checks the access key id instead: use the API key as
``AWS_ACCESS_KEY_ID`` (any secret key). A Bedrock API key (``Authorization: Bearer``) works too.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import InvalidRequestError, StreamchatError
from ..events import Message, StreamEvent
from ..request import MessageRequest
from ..wire import bedrock as wire
from .auth import check_credentials
from .common import ServerConfig, count_prompt_tokens, open_events, read_json
from .streaming import (
    EventStreamResponse,
    as_streamchat_error,
    encode_stream,
    respond_when_complete,
)

Build = Callable[..., MessageRequest]


def request_id() -> dict[str, str]:
    """botocore reports this as ``ResponseMetadata.RequestId``."""
    return {"x-amzn-RequestId": str(uuid.uuid4())}


def error_response(error: Exception) -> JSONResponse:
    error = as_streamchat_error(error)
    status, headers, body = wire.error_response(error.error_type, error.message)
    return JSONResponse(body, status_code=status, headers={**headers, **request_id()})


def encode_error(error: StreamchatError) -> bytes:
    return wire.exception_message(error.error_type, error.message)


def stream_response(chunks: AsyncIterator[bytes], headers: dict[str, str]) -> Response:
    response = EventStreamResponse(
        chunks, media_type=wire.EVENTSTREAM_MEDIA_TYPE, encode_error=encode_error
    )
    response.headers.update({**headers, **request_id()})
    return response


def routes(config: ServerConfig) -> list[Route]:
    async def start(request: Request, build: Build) -> AsyncIterator[StreamEvent]:
        """Auth, body, validation and the provider's first event: everything that can still
        fail with an HTTP status."""
        check_credentials(request, config)
        model_id = request.path_params["model_id"]
        if not model_id:
            raise InvalidRequestError("must not be empty", path="modelId")
        body: Any = await read_json(request, config)
        limit = config.max_tokens_limit
        return await open_events(
            config,
            model_id,
            lambda model: build(body, model=model, max_tokens_limit=limit),
            request.headers,
        )

    async def converse(request: Request) -> Response:
        started = time.perf_counter()
        try:
            events = await start(request, wire.build_converse_request)
        except Exception as error:
            return error_response(error)

        def render(message: Message) -> Response:
            body = wire.converse_response(message, time.perf_counter() - started)
            return JSONResponse(body, headers=request_id())

        return await respond_when_complete(request, events, render, error_response)

    async def converse_stream(request: Request) -> Response:
        started = time.perf_counter()
        try:
            events = await start(request, wire.build_converse_request)
        except Exception as error:
            return error_response(error)
        encoder = wire.ConverseStreamEncoder(started)
        return stream_response(encode_stream(events, encoder.encode, encode_error), {})

    async def invoke(request: Request) -> Response:
        started = time.perf_counter()
        try:
            events = await start(request, wire.build_invoke_request)
        except Exception as error:
            return error_response(error)

        def render(message: Message) -> Response:
            headers = wire.invoke_headers(message, time.perf_counter() - started)
            return JSONResponse(message.to_dict(), headers={**headers, **request_id()})

        return await respond_when_complete(request, events, render, error_response)

    async def invoke_stream(request: Request) -> Response:
        started = time.perf_counter()
        try:
            events = await start(request, wire.build_invoke_request)
        except Exception as error:
            return error_response(error)
        encoder = wire.InvokeStreamEncoder(started)
        chunks = encode_stream(events, encoder.encode, encode_error)
        return stream_response(chunks, {"X-Amzn-Bedrock-Content-Type": "application/json"})

    async def count_tokens(request: Request) -> Response:
        """``CountTokens``: the serving model's own count (its tokenizer and prompt format)."""
        try:
            check_credentials(request, config)
            model_id = request.path_params["model_id"]
            body = await read_json(request, config)
            limit = config.max_tokens_limit
            counted = wire.build_count_tokens_request(body, model=model_id, max_tokens_limit=limit)
            tokens = await count_prompt_tokens(config, model_id, counted)
        except Exception as error:
            return error_response(error)
        return JSONResponse(wire.count_tokens_body(tokens), headers=request_id())

    # {model_id:path}: ids arrive percent-decoded and may contain "/" (ARNs, inference profiles)
    return [
        Route("/model/{model_id:path}/converse", converse, methods=["POST"]),
        Route("/model/{model_id:path}/converse-stream", converse_stream, methods=["POST"]),
        Route("/model/{model_id:path}/invoke", invoke, methods=["POST"]),
        Route("/model/{model_id:path}/count-tokens", count_tokens, methods=["POST"]),
        Route(
            "/model/{model_id:path}/invoke-with-response-stream", invoke_stream, methods=["POST"]
        ),
    ]
