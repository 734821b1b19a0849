"""``openai/<model>``: any OpenAI-compatible Chat Completions server through the ``openai`` SDK.

This is the scale-out path: vLLM, llama.cpp's server, Ollama or OpenAI itself. The endpoint and
key come the SDK's usual way (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``; ``--base-url`` sets the
former). Local servers often need no key: one is only required for api.openai.com.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from ..errors import AuthenticationError, type_for_status
from ..events import StreamEvent
from ..request import MessageRequest
from .base import message_end, message_start, text_block_start, text_delta
from .resilience import RetryPolicy, UpstreamError, parse_retry_after, resilient_stream

FINISH_TO_STOP = {"stop": "end_turn", "length": "max_tokens"}  # others (tool_calls...) -> end_turn


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
            api_key=api_key or "unused", base_url=base_url, max_retries=0, timeout=timeout
        )

    def _params(self, request: MessageRequest) -> dict[str, Any]:
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages += [{"role": t.role, "content": t.content} for t in request.messages]
        params: dict[str, Any] = {
            "model": self.model_id,
            "messages": messages,
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
        if request.top_k is not None:
            params["extra_body"] = {"top_k": request.top_k}
        return params

    async def _attempt(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        stream = await self.client.chat.completions.create(**self._params(request))
        try:
            started = False
            deltas, finish, usage = 0, None, None
            async for chunk in stream:
                if not started:
                    started = True
                    yield message_start(request.model, 0, chunk.id or None)
                    yield text_block_start()
                if chunk.usage is not None:
                    usage = chunk.usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                if choice.delta is not None and choice.delta.content:
                    deltas += 1
                    yield text_delta(choice.delta.content)
                if choice.finish_reason:
                    finish = choice.finish_reason
            if finish is None:  # a dropped connection must not pass for a finished reply
                raise UpstreamError("api_error", "openai: the stream ended before the reply did")
            output = usage.completion_tokens if usage is not None else deltas
            input_tokens = usage.prompt_tokens if usage is not None else None
            for event in message_end(
                FINISH_TO_STOP.get(finish or "stop", "end_turn"),
                output,
                None,
                input_tokens=input_tokens,
            ):
                yield event
        finally:
            await stream.close()

    def stream(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        return resilient_stream(lambda: self._attempt(request), self.policy, classify)
