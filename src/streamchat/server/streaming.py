"""What the protocols share once a request is accepted: streaming, final messages, errors.

``EventStreamResponse`` closes its body iterator however the response ends (finished, client
gone, cancelled), and the encoding generator closes the provider stream in ``finally``: a client
that disconnects stops generation rather than leaving it to the garbage collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ..accumulate import accumulate_event
from ..errors import APIError, OverloadedError, StreamchatError
from ..events import Message, StreamEvent
from ..request import MessageRequest, build_request
from .common import ServerConfig

log = logging.getLogger("streamchat.server")

# Proxies (nginx) buffer responses unless told not to; caches must not replay a stream.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; nobody reads it
SHUTTING_DOWN = OverloadedError("the server is shutting down; retry the request")
FAREWELL_SECONDS = 1.0  # how long a stream cut by shutdown may take to send its error frame


def builder(kwargs: dict[str, Any], config: ServerConfig) -> Callable[[str], MessageRequest]:
    """``build(model_id)`` for :func:`open_events`: validation with the server's limits."""
    return lambda model: build_request(
        **{**kwargs, "model": model}, max_tokens_limit=config.max_tokens_limit
    )


def as_streamchat_error(error: Exception) -> StreamchatError:
    """Our own errors pass through; anything else is a bug, logged and reported as api_error."""
    if isinstance(error, StreamchatError):
        return error
    log.exception("unexpected error while serving a request", exc_info=error)
    return APIError(f"internal server error: {type(error).__name__}")


async def collect(events: AsyncIterator[StreamEvent]) -> Message:
    """Accumulate a whole stream into its message (raises on an ``error`` event)."""
    snapshot: Message | None = None
    try:
        async for event in events:
            snapshot = accumulate_event(snapshot, event)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    if snapshot is None:
        raise APIError("the provider ended the stream before message_start")
    return snapshot


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body is already read: only that can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def collect_while_connected(
    request: Request, events: AsyncIterator[StreamEvent]
) -> Message | None:
    """:func:`collect`, or ``None`` once the client disconnects (closing the provider stream).

    Starlette watches for disconnects only while a streaming body is being sent, so without
    this a non-streaming request would generate to the end for a client that gave up.
    """
    work = asyncio.ensure_future(collect(events))
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        work.cancel()  # no-op when it finished; else collect's finally closes the stream
    await asyncio.wait({work})  # let a cancelled collect run its finally; raises nothing
    return None if work.cancelled() else work.result()


async def respond_when_complete(
    request: Request,
    events: AsyncIterator[StreamEvent],
    render: Callable[[Message], Response],
    error_response: Callable[[Exception], Response],
) -> Response:
    """The non-streaming answer, the same for every protocol: ``render(message)``, a failure in
    the protocol's error shape, or 499 when the client left before the end."""
    try:
        message = await collect_while_connected(request, events)
    except Exception as error:
        return error_response(error)
    if message is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return render(message)


async def encode_stream(
    events: AsyncIterator[StreamEvent],
    encode: Callable[[StreamEvent], bytes],
    encode_error: Callable[[StreamchatError], bytes],
) -> AsyncIterator[bytes]:
    """Encode each event as it arrives (no buffering); a failure becomes an in-stream error."""
    try:
        async for event in events:
            data = encode(event)
            if data:
                yield data
    except Exception as error:
        yield encode_error(as_streamchat_error(error))
    finally:
        await events.aclose()  # type: ignore[attr-defined]


class EventStreamResponse(StreamingResponse):
    """A ``StreamingResponse`` that always closes its body iterator, with the stream headers.

    Starlette cancels the sending task on disconnect under ASGI spec < 2.4, but under 2.4 a
    failed ``send`` just raises, leaving the generator suspended; closing it here covers both.
    A stream the server itself cancels (shutdown past its grace period) ends with
    ``encode_error``'s frame for :data:`SHUTTING_DOWN` rather than a cut-off body.
    """

    def __init__(
        self,
        content: AsyncIterator[bytes],
        media_type: str = "text/event-stream",
        encode_error: Callable[[StreamchatError], bytes] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(
            content, media_type=media_type, headers={**STREAM_HEADERS, **(headers or {})}
        )
        self.encode_error = encode_error
        self._unfinished = False  # the body began and has not ended

    async def stream_response(self, send: Send) -> None:
        self._unfinished = True
        try:
            await super().stream_response(send)
            self._unfinished = False
        finally:
            await self.body_iterator.aclose()  # type: ignore[union-attr]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            # A disconnect ends the response without cancelling this task; uvicorn cancels it
            # only when shutting down past its grace period. Say so, in the protocol's terms.
            if self._unfinished and self.encode_error is not None:
                last = self.encode_error(SHUTTING_DOWN)
                message = {"type": "http.response.body", "body": last, "more_body": False}
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(send(message), FAREWELL_SECONDS)
            raise
