"""``openai/<model>``: any OpenAI-compatible Chat Completions server through the ``openai`` SDK.

This is the scale-out path: vLLM, llama.cpp's server, Ollama or OpenAI itself. The endpoint and
key come the SDK's usual way (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``; ``--base-url`` sets the
former). Local servers often need no key: one is only required for api.openai.com. Tools, tool
turns, JSON output and thinking pass upstream; upstream ``tool_calls`` fragments and reasoning
become canonical tool_use / input_json_delta / thinking events as they arrive.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from ..errors import AuthenticationError, type_for_status
from ..events import StopReason, StreamEvent
from ..media import MediaBlock
from ..request import MessageRequest
from ..wire.openai_upstream import chat_messages, tool_params
from .base import (
    block_stop,
    input_json_delta,
    message_finish,
    message_start,
    text_block_start,
    text_delta,
    thinking_delta,
    thinking_start,
    tool_use_start,
    with_cache_counts,
)
from .media_urls import inline_urls, needs_fetch
from .resilience import RetryPolicy, UpstreamError, parse_retry_after, resilient_stream
from .resuming import resuming_client

# Upstream finish reason -> canonical stop reason (others, e.g. content_filter -> end_turn)
FINISH_TO_STOP: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
}
REASONING_FIELDS = ("reasoning_content", "reasoning")  # vLLM/DeepSeek, and Ollama/OpenRouter


def classify(error: BaseException) -> UpstreamError | None:
    import openai

    if isinstance(error, openai.APIStatusError):
        return UpstreamError(
            type_for_status(error.status_code),
            f"openai: {error.message}",
            retry_after=parse_retry_after(error.response.headers),
        )
    if isinstance(error, openai.APITimeoutError):
        return UpstreamError("timeout_error", "openai: the request timed out")
    if isinstance(error, openai.APIConnectionError):
        base = os.environ.get("OPENAI_BASE_URL", "the API")
        return UpstreamError("api_error", f"openai: cannot reach {base}")
    if isinstance(error, openai.APIError):  # an error object inside the stream
        return UpstreamError("api_error", f"openai: {error.message}")
    return None


def reads_url(block: MediaBlock) -> bool:
    """Chat Completions reads an image's URL itself, but not a file's."""
    return block.type == "image"


class ChunkReader:
    """Upstream ``chat.completion.chunk`` deltas -> canonical block events, in arrival order.

    Text and reasoning blocks close when another block starts; tool calls stay open until the
    end, since servers may interleave several calls' fragments by ``index``. A call opens once
    its name is known (its id and first fragments wait for it, if they come first).
    """

    def __init__(self) -> None:
        self.blocks = 0  # content blocks started
        self.open: tuple[str, int] | None = None  # the open text/thinking block (kind, index)
        self.calls: dict[int, int] = {}  # upstream call index -> content block index
        self.pending: dict[int, tuple[str | None, str]] = {}  # index -> (id, arguments) unnamed
        self.last_call = 0
        self.deltas = 0

    def _start(self) -> tuple[list[StreamEvent], int]:
        events = [block_stop(self.open[1])] if self.open is not None else []
        self.open = None
        self.blocks += 1
        return events, self.blocks - 1

    def text(self, kind: str, value: str) -> list[StreamEvent]:
        """A text or thinking fragment, opening its block when the kind changes."""
        self.deltas += 1
        if self.open is not None and self.open[0] == kind:
            index, events = self.open[1], []
        else:
            events, index = self._start()
            events.append(text_block_start(index) if kind == "text" else thinking_start(index))
            self.open = (kind, index)
        events.append(text_delta(value, index) if kind == "text" else thinking_delta(value, index))
        return events

    def tool_call(self, call: Any) -> list[StreamEvent]:
        """One entry of ``delta.tool_calls``: ``{index, id?, function{name?, arguments?}}``."""
        function = call.function
        name = getattr(function, "name", None)
        arguments = getattr(function, "arguments", None) or ""
        if not isinstance(arguments, str):  # a server that sends the arguments as an object
            arguments = json.dumps(arguments, ensure_ascii=False)
        number = call.index
        if not isinstance(number, int):  # servers that leave index out: a name opens a call
            number = len(self.calls) + len(self.pending) if name else self.last_call
        self.last_call = number
        self.deltas += 1
        if number in self.calls:
            return [input_json_delta(arguments, self.calls[number])] if arguments else []
        call_id, held = self.pending.pop(number, (None, ""))
        call_id, held = call_id or call.id, held + arguments
        if not name:
            self.pending[number] = (call_id, held)
            return []
        events, index = self._start()
        self.calls[number] = index
        events.append(tool_use_start(index, name, call_id or None))
        if held:
            events.append(input_json_delta(held, index))
        return events

    def finish(self) -> list[StreamEvent]:
        """Close every open block (an empty text block when the reply had none)."""
        if self.pending:
            raise UpstreamError("api_error", "openai: a tool call arrived without a function name")
        events = [block_stop(self.open[1])] if self.open is not None else []
        events += [block_stop(index) for index in sorted(self.calls.values())]
        if not self.blocks:
            events += [text_block_start(0), block_stop(0)]
        return events


class OpenAIProvider:
    name = "openai"

    def __init__(self, model_id: str, *, policy: RetryPolicy | None = None):
        import openai

        base_url = os.environ.get("OPENAI_BASE_URL")
        api_key = os.environ.get("OPENAI_API_KEY")
        if not api_key and not base_url:
            raise AuthenticationError(
                "openai: no credentials; set OPENAI_API_KEY, or --base-url for a local server"
            )
        self.model_id = model_id
        self.policy = policy or RetryPolicy.from_env()
        timeout = max(self.policy.first_token_timeout or 600, self.policy.idle_timeout or 600)
        self.client = openai.AsyncOpenAI(
            api_key=api_key or "unused",
            base_url=base_url,
            max_retries=0,
            timeout=timeout,
            http_client=resuming_client(openai.DefaultAsyncHttpxClient),
        )

    def _params(self, request: MessageRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model_id,
            "messages": chat_messages(request),
            "max_tokens": request.max_tokens,  # what vLLM, llama.cpp and Ollama all accept
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        optional = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
            "stop": request.stop_sequences or None,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        params.update(tool_params(request))
        if request.top_k is not None:
            params["extra_body"] = {"top_k": request.top_k}
        return params

    async def _attempt(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        if needs_fetch(request, reads_url):
            request = await asyncio.to_thread(inline_urls, request, reads_url)
        stream = await self.client.chat.completions.create(**self._params(request))
        try:
            reader = ChunkReader()
            started = False
            finish, usage = None, None
            async for chunk in stream:
                if not started:
                    started = True
                    yield message_start(request.model, 0, chunk.id or None)
                if chunk.usage is not None:
                    usage = chunk.usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = choice.delta
                if delta is not None:
                    extra = delta.model_extra or {}
                    for name in REASONING_FIELDS:
                        if isinstance(reasoning := extra.get(name), str) and reasoning:
                            for event in reader.text("thinking", reasoning):
                                yield event
                    if delta.content:
                        for event in reader.text("text", delta.content):
                            yield event
                    for call in delta.tool_calls or ():
                        for event in reader.tool_call(call):
                            yield event
                if choice.finish_reason:
                    finish = choice.finish_reason
            if finish is None:  # a dropped connection must not pass for a finished reply
                raise UpstreamError("api_error", "openai: the stream ended before the reply did")
            for event in reader.finish():
                yield event
            stop = FINISH_TO_STOP.get(finish, "end_turn")
            if stop == "end_turn" and reader.calls:  # servers that say "stop" after calls
                stop = "tool_use"
            output = usage.completion_tokens if usage is not None else reader.deltas
            input_tokens = usage.prompt_tokens if usage is not None else None
            details = getattr(usage, "prompt_tokens_details", None)
            cached = getattr(details, "cached_tokens", None)  # OpenAI's cache: reads only
            if cached is not None and input_tokens is not None:  # Anthropic's input excludes it
                input_tokens -= cached
            finish_events = message_finish(stop, output, None, input_tokens)
            for event in with_cache_counts(finish_events, cached, None):
                yield event
        finally:
            await stream.close()

    def stream(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        return resilient_stream(lambda: self._attempt(request), self.policy, classify)
