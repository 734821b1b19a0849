"""``anthropic/<model>``: the Anthropic Messages API through the official ``anthropic`` SDK.

Credentials and endpoint come the SDK's usual way (``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``).
The SDK's own retries are off: :mod:`.resilience` retries, and only before the first token;
a reply from a streamchat server survives a dropped connection (:mod:`.resuming`).
Tools, tool results, thinking (signatures intact, so the API accepts a multi-turn thinking
conversation) and structured output pass through; upstream blocks and deltas of those kinds
become canonical events as they arrive.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..errors import AuthenticationError, type_for_status
from ..events import STOP_REASONS, StreamEvent
from ..request import MessageRequest, Turn
from .base import (
    block_stop,
    input_json_delta,
    message_finish,
    message_start,
    signature_delta,
    text_block_start,
    text_delta,
    thinking_delta,
    thinking_start,
    tool_use_start,
    with_cache_counts,
)
from .resilience import RetryPolicy, UpstreamError, parse_retry_after, resilient_stream
from .resuming import resuming_client

# upstream block type -> our block's start event (other kinds, e.g. redacted_thinking or server
# tool blocks, are left out, with their deltas)
BLOCK_STARTS: dict[str, Callable[[int, Any], StreamEvent]] = {
    "text": lambda index, block: text_block_start(index),
    "tool_use": lambda index, block: tool_use_start(index, block.name, block.id),
    "thinking": lambda index, block: thinking_start(index),
}
# upstream delta type -> our delta event
DELTAS: dict[str, Callable[[Any, int], StreamEvent]] = {
    "text_delta": lambda delta, index: text_delta(delta.text, index),
    "input_json_delta": lambda delta, index: input_json_delta(delta.partial_json, index),
    "thinking_delta": lambda delta, index: thinking_delta(delta.thinking, index),
    "signature_delta": lambda delta, index: signature_delta(delta.signature, index),
}


def message_param(turn: Turn) -> dict[str, Any]:
    """A turn as the Messages API takes it: plain text, or every block (empty text left out:
    the API refuses it)."""
    if not turn.blocks:
        return {"role": turn.role, "content": turn.content}
    blocks = [b.to_dict() for b in turn.blocks if not (b.type == "text" and not b.text)]
    return {"role": turn.role, "content": blocks}


def tool_params(request: MessageRequest) -> dict[str, Any]:
    """``tools``, ``tool_choice``, ``thinking`` and ``output_config`` for the upstream call."""
    params: dict[str, Any] = {}
    if request.tools:
        params["tools"] = [
            {"name": t.name, "input_schema": t.input_schema}
            | ({"description": t.description} if t.description else {})
            | ({"strict": True} if t.strict else {})
            for t in request.tools
        ]
        choice = request.tool_choice
        tool_choice: dict[str, Any] = {"type": choice.type}
        if choice.name is not None:
            tool_choice["name"] = choice.name
        if choice.disable_parallel_tool_use:
            tool_choice["disable_parallel_tool_use"] = True
        params["tool_choice"] = tool_choice
    if request.thinking is not None:
        thinking: dict[str, Any] = {"type": request.thinking.type}
        if request.thinking.budget_tokens is not None:
            thinking["budget_tokens"] = request.thinking.budget_tokens
        params["thinking"] = thinking
    if request.output_format is not None:
        schema = request.output_format.schema or {"type": "object"}
        params["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    return params


def classify(error: BaseException) -> UpstreamError | None:
    import anthropic

    if isinstance(error, anthropic.APIStatusError):
        body = error.body if isinstance(error.body, dict) else {}
        detail = body.get("error") if isinstance(body.get("error"), dict) else {}
        kind = detail.get("type") or type_for_status(error.status_code)
        message = detail.get("message") or error.message
        return UpstreamError(
            kind, f"anthropic: {message}", retry_after=parse_retry_after(error.response.headers)
        )
    if isinstance(error, anthropic.APITimeoutError):
        return UpstreamError("timeout_error", "anthropic: the request timed out")
    if isinstance(error, anthropic.APIConnectionError):
        return UpstreamError("api_error", f"anthropic: cannot reach the API ({error.message})")
    return None


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, model_id: str, *, policy: RetryPolicy | None = None):
        import anthropic

        if not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")):
            raise AuthenticationError("anthropic: no credentials; set ANTHROPIC_API_KEY")
        self.model_id = model_id
        self.policy = policy or RetryPolicy.from_env()
        timeout = max(self.policy.first_token_timeout or 600, self.policy.idle_timeout or 600)
        self.client = anthropic.AsyncAnthropic(
            max_retries=0,
            timeout=timeout,
            http_client=resuming_client(anthropic.DefaultAsyncHttpxClient),
        )
        self._sync_client: anthropic.Anthropic | None = None  # for count_tokens, made on demand

    def _params(self, request: MessageRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model_id,
            "max_tokens": request.max_tokens,
            "messages": [message_param(turn) for turn in request.messages],
            **tool_params(request),
        }
        if request.system:
            params["system"] = request.system
        if request.stop_sequences:
            params["stop_sequences"] = request.stop_sequences
        # Sampling fields go in the body: the current SDK no longer takes them as arguments.
        sampling = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "top_k": request.top_k,
        }
        extra = {k: v for k, v in sampling.items() if v is not None}
        if extra:
            params["extra_body"] = extra
        return params

    def count_tokens(self, request: MessageRequest) -> int:
        """The upstream's own exact count (system, tools and every block included); blocking,
        so the server calls it in a worker thread."""
        import anthropic

        if self._sync_client is None:
            self._sync_client = anthropic.Anthropic(max_retries=0, timeout=60)
        params = self._params(request)
        for name in ("max_tokens", "stop_sequences", "extra_body"):  # not count_tokens fields
            params.pop(name, None)
        try:
            return self._sync_client.messages.count_tokens(**params).input_tokens
        except anthropic.APIError as error:
            raise (classify(error) or error) from error

    async def _attempt(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        stream = await self.client.messages.create(stream=True, **self._params(request))
        try:
            blocks: dict[int, int] = {}  # upstream index -> our index (blocks we relay)
            stop_reason, stop_sequence = "end_turn", None
            output_tokens, input_tokens = 0, None
            cache: tuple[int | None, int | None] = (None, None)  # prompt-cache read, written
            async for raw in stream:
                kind = raw.type
                if kind == "content_block_delta":
                    index = blocks.get(raw.index)
                    relay = DELTAS.get(raw.delta.type)
                    if index is not None and relay is not None:
                        yield relay(raw.delta, index)
                elif kind == "message_start":
                    usage = raw.message.usage
                    opening = message_start(request.model, usage.input_tokens, raw.message.id)
                    cache = _cache_counts(usage, cache)
                    counts = opening.message.usage  # type: ignore[attr-defined]
                    counts.cache_read_input_tokens, counts.cache_creation_input_tokens = cache
                    yield opening
                elif kind == "content_block_start":
                    start = BLOCK_STARTS.get(raw.content_block.type)
                    if start is not None:
                        blocks[raw.index] = len(blocks)
                        yield start(blocks[raw.index], raw.content_block)
                elif kind == "content_block_stop":
                    if raw.index in blocks:
                        yield block_stop(blocks[raw.index])
                elif kind == "message_delta":
                    if raw.delta.stop_reason in STOP_REASONS:  # e.g. refusal, pause_turn: end
                        stop_reason = raw.delta.stop_reason
                    stop_sequence = raw.delta.stop_sequence
                    output_tokens = raw.usage.output_tokens
                    input_tokens = getattr(raw.usage, "input_tokens", None)
                    cache = _cache_counts(raw.usage, cache)
                elif kind == "message_stop":
                    for event in with_cache_counts(
                        message_finish(stop_reason, output_tokens, stop_sequence, input_tokens),
                        *cache,
                    ):
                        yield event
        finally:
            await stream.close()

    def stream(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        return resilient_stream(lambda: self._attempt(request), self.policy, classify)


def _cache_counts(
    usage: Any, before: tuple[int | None, int | None]
) -> tuple[int | None, int | None]:
    """The upstream's prompt-cache counts (read, written), where it reports them."""
    read = getattr(usage, "cache_read_input_tokens", None)
    written = getattr(usage, "cache_creation_input_tokens", None)
    return (before[0] if read is None else read, before[1] if written is None else written)
