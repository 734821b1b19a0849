"""OpenAI Responses endpoints: ``POST /v1/responses`` (streaming and not), ``GET`` and
``DELETE /v1/responses/{id}``.

The same pipeline as Chat Completions; only the codec differs. A stored response (``store``,
on by default as in OpenAI's API) keeps its whole conversation, so ``previous_response_id``
continues it without the client sending the history again. With history on, stored responses
live in the history database (SQLite or PostgreSQL), so any replica can continue any of them;
without, in this process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import (
    HistoryError,
    InvalidRequestError,
    NotFoundError,
    StreamchatError,
    field_name,
)
from ..events import Message, StreamEvent
from ..history.shared import shared_store
from ..request import MessageRequest
from ..wire import responses as wire
from .auth import check_api_key
from .common import ServerConfig, open_events, read_json
from .openai import DEFAULT_MAX_TOKENS, error_response
from .replies import (
    REPLY_HEADER,
    ReplyLog,
    StoredLog,
    follow_response,
    numbered,
    replies_of,
    wants_resumable,
)
from .streaming import (
    EventStreamResponse,
    builder,
    encode_stream,
    respond_when_complete,
)

# canonical request field -> the Responses parameter a validation error should name (and its
# children follow: output_format.schema -> text.format.schema)
PARAMS = {
    "max_tokens": "max_output_tokens",
    "output_format": "text.format",
    "system": "instructions",
}
STORED_RESPONSES = 1000  # kept per server process without history, oldest dropped first
Stored = tuple[dict[str, Any], list[dict[str, Any]]]
log = logging.getLogger("streamchat.history")


class ResponseStore:
    """Stored responses of this server process (history off): the response body and its
    conversation (Anthropic-shaped messages, this response's output included), bounded, oldest
    out first. The awaitable ``save``/``load``/``remove`` are what the routes use."""

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

    async def save(self, body: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
        self.put(body, conversation)

    async def load(self, response_id: str) -> Stored | None:
        return self.get(response_id)

    async def remove(self, response_id: str) -> bool:
        return self.delete(response_id)


class HistoryResponseStore:
    """Stored responses in the history database, shared by every replica that uses it; the
    database work runs in a worker thread. A failed save is logged: the answer still goes out."""

    def __init__(self, target: str) -> None:
        self.target = target

    async def save(self, body: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
        try:
            store = await asyncio.to_thread(shared_store, self.target)
            await asyncio.to_thread(store.put_response, body, conversation)
        except HistoryError as error:
            log.warning("response %s not stored: %s", body.get("id"), error.message)

    async def load(self, response_id: str) -> Stored | None:
        store = await asyncio.to_thread(shared_store, self.target)
        return await asyncio.to_thread(store.get_response, response_id)

    async def remove(self, response_id: str) -> bool:
        store = await asyncio.to_thread(shared_store, self.target)
        return await asyncio.to_thread(store.delete_response, response_id)


def conversation(request: MessageRequest, message: Message | None) -> list[dict[str, Any]]:
    """The request's turns and the reply, as messages a later request can start from."""
    turns = [
        {"role": turn.role, "content": [block.to_dict() for block in turn.parts]}
        for turn in request.messages
    ]
    reply = [block.to_dict() for block in message.content] if message is not None else []
    return [*turns, {"role": "assistant", "content": reply}] if reply else turns


def rename(error: StreamchatError) -> StreamchatError:
    """Name the Responses parameter in a validation error (``max_tokens`` -> ...)."""
    renamed = field_name(error.path, PARAMS) if error.path is not None else None
    return error.rename(renamed) if renamed is not None else error


def routes(config: ServerConfig) -> list[Route]:
    store = HistoryResponseStore(config.history_path) if config.history_path else ResponseStore()

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
                stored = await store.load(previous)
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

        async def keep(message: Message) -> dict[str, Any]:
            final = wire.final_body(message, model, options.echo, created)
            if options.store and message.stop_reason is not None:
                await store.save(final, conversation(built[0], message))
            return final

        if options.stream or options.background:
            encoder = wire.ResponseStreamEncoder(model, options.echo, created)
            if options.background or wants_resumable(request.headers):
                return await detached(request, encoder, events, built[0], options)

            async def frames() -> AsyncIterator[bytes]:
                async for frame in encode_stream(events, encoder.encode, encoder.encode_error):
                    yield frame
                if encoder.message is not None:
                    await keep(encoder.message)

            return EventStreamResponse(numbered(frames()), encode_error=encoder.encode_error)

        async def render(message: Message) -> Response:
            return JSONResponse(await keep(message))

        answer = await respond_when_complete(request, events, render, error_response)
        return await answer if asyncio.iscoroutine(answer) else answer

    async def detached(
        request: Request,
        encoder: wire.ResponseStreamEncoder,
        events: AsyncIterator[StreamEvent],
        built: MessageRequest,
        options: wire.ResponsesOptions,
    ) -> Response:
        """A background (or resumable) response: generated by a task of its own into a
        :class:`~.replies.ReplyLog`; the client follows it (``stream``) or polls it by id."""

        def body(status: str) -> dict[str, Any]:
            if status in ("completed", "incomplete", "failed") and encoder.response is not None:
                return encoder.response  # the terminal event's own
            return encoder.snapshot(status)

        async def on_end(status: str) -> None:
            if options.store and encoder.message is not None:
                await store.save(body(status), conversation(built, encoder.message))

        log = await replies_of(request).start(
            "responses",
            events,
            encoder.encode,
            encoder.encode_error,
            background=options.background,
            on_end=on_end,
        )
        log.snapshot = lambda: body(log.status)
        if options.background and options.store:  # so that every replica finds it meanwhile
            await store.save({**body("in_progress"), "id": log.reply_id}, conversation(built, None))
        if options.stream:
            return follow_response(log, -1, None)
        queued = {**encoder.snapshot("queued"), "id": log.reply_id}  # before its first event
        return JSONResponse(queued, headers={REPLY_HEADER: log.reply_id})

    async def retrieve(request: Request) -> Response:
        response_id = request.path_params["response_id"]
        try:
            check_api_key(request, config)
            log = await responses_log(request, response_id)
            if request.query_params.get("stream", "").lower() in ("true", "1"):
                after = starting_after(request)
                if log is not None:
                    replies_of(request).count("resumed")
                    return follow_response(log, after, None)
                if await store.load(response_id) is None:
                    raise not_found(response_id)
                raise InvalidRequestError(
                    "this response cannot be streamed: it was not created with background: true "
                    "(or its stream has expired)",
                    path="stream",
                )
            if log is not None and not log.finished and log.snapshot is not None:
                return JSONResponse(log.snapshot())
            stored = await store.load(response_id)
            if stored is None:
                raise not_found(response_id)
        except Exception as error:
            return error_response(error)
        return JSONResponse(stored[0])

    async def cancel(request: Request) -> Response:
        response_id = request.path_params["response_id"]
        try:
            check_api_key(request, config)
            log = await responses_log(request, response_id)
            if log is None or log.finished:
                stored = await store.load(response_id)
                if stored is None:
                    raise not_found(response_id)
                if not stored[0].get("background"):
                    raise InvalidRequestError(
                        "only responses created with background: true can be cancelled"
                    )
                return JSONResponse(stored[0])  # it had already finished
        except Exception as error:
            return error_response(error)
        log.cancel()
        await log.wait_finished()
        if log.snapshot is not None:
            return JSONResponse(log.snapshot())
        stored = await store.load(response_id)  # generated by another replica: as it saved it
        return JSONResponse(stored[0]) if stored else error_response(not_found(response_id))

    async def delete(request: Request) -> Response:
        response_id = request.path_params["response_id"]
        try:
            check_api_key(request, config)
            if not await store.remove(response_id):
                raise not_found(response_id)
        except Exception as error:
            return error_response(error)
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})

    return [
        Route("/v1/responses", create, methods=["POST"]),
        Route("/v1/responses/{response_id}", retrieve, methods=["GET"]),
        Route("/v1/responses/{response_id}", delete, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/cancel", cancel, methods=["POST"]),
    ]


async def responses_log(request: Request, response_id: str) -> ReplyLog | StoredLog | None:
    """The resumable log of a Responses response (not another protocol's reply)."""
    log = await replies_of(request).find(response_id)
    return log if log is not None and log.protocol == "responses" else None


def starting_after(request: Request) -> int:
    """``?starting_after=N``: resume after the event whose ``sequence_number`` is N."""
    value = request.query_params.get("starting_after")
    if value is None:
        return -1
    try:
        position = int(value)
    except ValueError:
        position = -2
    if position < -1:
        raise InvalidRequestError(
            f"expected an event's sequence number, got {value!r}", path="starting_after"
        )
    return position
