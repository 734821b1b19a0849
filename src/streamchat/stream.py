"""``AsyncMessageStream`` and its sync twin: events, ``text_stream``, final message, metrics.

The names match the Anthropic SDK's ``lib/streaming`` helpers so user code carries over. The sync
class drives the async one on the background loop (:mod:`streamchat._bridge`): one implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from . import _bridge
from .accumulate import accumulate_event, parse_partial_json
from .errors import StreamchatError
from .events import Message, StreamEvent, close_events
from .metrics import Metrics, MetricsRecorder


@dataclass(slots=True)
class TextEvent:
    """After each text delta: the delta and the block's text so far (the SDK's ``text``)."""

    text: str
    snapshot: str
    timestamp: float = field(default=0.0, repr=False, compare=False)
    type: Literal["text"] = "text"


@dataclass(slots=True)
class InputJsonEvent:
    """After each tool-input fragment: the fragment and the input parsed so far."""

    partial_json: str
    snapshot: Any
    timestamp: float = field(default=0.0, repr=False, compare=False)
    type: Literal["input_json"] = "input_json"


@dataclass(slots=True)
class ThinkingEvent:
    thinking: str
    snapshot: str
    timestamp: float = field(default=0.0, repr=False, compare=False)
    type: Literal["thinking"] = "thinking"


@dataclass(slots=True)
class SignatureEvent:
    signature: str
    timestamp: float = field(default=0.0, repr=False, compare=False)
    type: Literal["signature"] = "signature"


HelperEvent = TextEvent | InputJsonEvent | ThinkingEvent | SignatureEvent


def helper_event(snapshot: Message, event: StreamEvent) -> HelperEvent | None:
    """The Anthropic SDK's typed event for a delta, with the block's snapshot so far."""
    delta = event.delta
    block = snapshot.content[event.index]
    kind = delta.type
    if kind == "text_delta":
        return TextEvent(delta.text, block.text, event.timestamp)
    if kind == "input_json_delta":
        block.input = parse_partial_json(block.partial_json)
        return InputJsonEvent(delta.partial_json, block.input, event.timestamp)
    if kind == "thinking_delta":
        return ThinkingEvent(delta.thinking, block.thinking, event.timestamp)
    return SignatureEvent(delta.signature, event.timestamp)


class AsyncMessageStream:
    """An async iterator of canonical events that accumulates the message as it goes.

    After the stream ends, fails or is closed, :meth:`get_final_message` returns what arrived
    (``stop_reason`` is ``None`` for a reply that was cut short).
    """

    def __init__(
        self,
        events: AsyncIterator[StreamEvent],
        *,
        started_at: float | None = None,
        helper_events: bool = False,
    ):
        self._events = events
        # messages.stream() (not create(stream=True)) adds the SDK's text / input_json /
        # thinking / signature events after each delta, as the Anthropic SDK does
        self._helper_events = helper_events
        self._queued: deque[HelperEvent] = deque()
        self._recorder = MetricsRecorder(
            started_at if started_at is not None else time.perf_counter()
        )
        self._snapshot: Message | None = None
        self._pending: StreamEvent | None = None
        self._finished = False
        self._reader: asyncio.Task | None = None  # the task inside __anext__, if any

    async def start(self) -> AsyncMessageStream:
        """Wait for the first event, so errors before streaming surface here (as in the SDK)."""
        if self._pending is None and not self._finished:
            self._pending = await self._next_event()
        return self

    async def _next_event(self) -> StreamEvent:
        try:
            event = await self._events.__anext__()
        except StopAsyncIteration:
            self._finished = True
            raise
        self._recorder.observe(event)
        try:
            self._snapshot = accumulate_event(self._snapshot, event)
        except StreamchatError as error:
            self._finished = True
            error.partial_message = self._snapshot  # type: ignore[attr-defined]
            raise
        if event.type == "message_stop":
            self._finished = True
        elif self._helper_events and event.type == "content_block_delta":
            helper = helper_event(self._snapshot, event)
            if helper is not None:
                self._queued.append(helper)
        return event

    def __aiter__(self) -> AsyncMessageStream:
        return self

    async def __anext__(self) -> StreamEvent | HelperEvent:
        if self._pending is not None:
            event, self._pending = self._pending, None
            return event
        if self._queued:
            return self._queued.popleft()
        if self._finished:
            raise StopAsyncIteration
        self._reader = asyncio.current_task()
        try:
            return await self._next_event()
        finally:
            self._reader = None

    @property
    async def text_stream(self) -> AsyncIterator[str]:
        """Only the text of each text delta."""
        async for event in self:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                yield event.delta.text

    async def until_done(self) -> None:
        async for _ in self:
            pass

    async def get_final_message(self) -> Message:
        await self.until_done()
        return self.current_message_snapshot

    async def get_final_text(self) -> str:
        return (await self.get_final_message()).text

    @property
    def current_message_snapshot(self) -> Message:
        if self._snapshot is None:
            raise StreamchatError("no message has been received yet")
        return self._snapshot

    @property
    def metrics(self) -> Metrics:
        return self._recorder.metrics()

    @property
    def recorder(self) -> MetricsRecorder:
        return self._recorder

    async def close(self) -> None:
        """Stop the stream; the provider stops generating within one token.

        Safe from any task, even while another is waiting in ``__anext__`` (Ctrl-C in the sync
        API, a stop button): that read is cancelled and finishes unwinding before the close.
        """
        self._finished = True
        self._pending = None
        self._queued.clear()
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task() and not reader.done():
            if not reader.cancelling():  # cancel once; never interrupt its cleanup
                reader.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait({reader})
        await close_events(self._events)

    async def __aenter__(self) -> AsyncMessageStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class MessageStream:
    """The sync twin of :class:`AsyncMessageStream` (same names, blocking calls)."""

    def __init__(self, inner: AsyncMessageStream):
        self._inner = inner

    def __iter__(self) -> Iterator[StreamEvent | HelperEvent]:
        return self

    def __next__(self) -> StreamEvent | HelperEvent:
        try:
            return _bridge.run(self._inner.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    @property
    def text_stream(self) -> Iterator[str]:
        for event in self:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                yield event.delta.text

    def until_done(self) -> None:
        for _ in self:
            pass

    def get_final_message(self) -> Message:
        self.until_done()
        return self._inner.current_message_snapshot

    def get_final_text(self) -> str:
        return self.get_final_message().text

    @property
    def current_message_snapshot(self) -> Message:
        return self._inner.current_message_snapshot

    @property
    def metrics(self) -> Metrics:
        return self._inner.metrics

    @property
    def recorder(self) -> MetricsRecorder:
        return self._inner.recorder

    def close(self) -> None:
        _bridge.run(self._inner.close())

    def __enter__(self) -> MessageStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncMessageStreamManager:
    """``async with client.messages.stream(...) as stream`` — starts on enter, closes on exit."""

    def __init__(self, start: Any):
        self._start = start
        self._stream: AsyncMessageStream | None = None

    async def __aenter__(self) -> AsyncMessageStream:
        self._stream = await self._start()
        return self._stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stream is not None:
            await self._stream.close()


class MessageStreamManager:
    """``with client.messages.stream(...) as stream`` — the sync twin."""

    def __init__(self, start: Any):
        self._start = start
        self._stream: MessageStream | None = None

    def __enter__(self) -> MessageStream:
        self._stream = MessageStream(_bridge.run(self._start()))
        return self._stream

    def __exit__(self, *exc: object) -> None:
        if self._stream is not None:
            self._stream.close()
