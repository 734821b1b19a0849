"""``anthropic/<model>``: the Anthropic Messages API through the official ``anthropic`` SDK.

Credentials and endpoint come the SDK's usual way (``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``).
The SDK's own retries are off: :mod:`.resilience` retries, and only before the first token.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from ..errors import AuthenticationError, type_for_status
from ..events import ContentBlockStopEvent, StreamEvent
from ..request import MessageRequest
from .base import message_finish, message_start, text_block_start, text_delta
from .resilience import RetryPolicy, UpstreamError, parse_retry_after, resilient_stream


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
        self.client = anthropic.AsyncAnthropic(max_retries=0, timeout=timeout)

    def _params(self, request: MessageRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model_id,
            "max_tokens": request.max_tokens,
            "messages": [{"role": t.role, "content": t.content} for t in request.messages],
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

    async def _attempt(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        stream = await self.client.messages.create(stream=True, **self._params(request))
        try:
            text_blocks: dict[int, int] = {}  # upstream index -> our index (text blocks only)
            stop_reason, stop_sequence = "end_turn", None
            output_tokens, input_tokens = 0, None
            async for raw in stream:
                kind = raw.type
                if kind == "content_block_delta":
                    if raw.delta.type == "text_delta" and raw.index in text_blocks:
                        yield text_delta(raw.delta.text, text_blocks[raw.index])
                elif kind == "message_start":
                    usage = raw.message.usage
                    yield message_start(request.model, usage.input_tokens, raw.message.id)
                elif kind == "content_block_start":
                    if raw.content_block.type == "text":
                        text_blocks[raw.index] = len(text_blocks)
                        yield text_block_start(text_blocks[raw.index])
                elif kind == "content_block_stop":
                    if raw.index in text_blocks:
                        yield ContentBlockStopEvent(index=text_blocks[raw.index])
                elif kind == "message_delta":
                    stop_reason = raw.delta.stop_reason or stop_reason
                    stop_sequence = raw.delta.stop_sequence
                    output_tokens = raw.usage.output_tokens
                    input_tokens = getattr(raw.usage, "input_tokens", None)
                elif kind == "message_stop":
                    for event in message_finish(
                        stop_reason, output_tokens, stop_sequence, input_tokens
                    ):
                        yield event
        finally:
            await stream.close()

    def stream(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        return resilient_stream(lambda: self._attempt(request), self.policy, classify)
