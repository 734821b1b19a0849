"""``bedrock/<modelId>``: Amazon Bedrock's Converse API through ``boto3`` (``converse_stream``).

Credentials, region and endpoint come the usual AWS way (env, profile, instance role;
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` or ``--endpoint-url``). boto3 blocks, so each attempt runs in
a worker thread; a watcher closes the HTTP stream as soon as the consumer goes away.
Tools (``toolConfig``), tool calls and results, reasoning (``additionalModelRequestFields.thinking``
and ``reasoningContent`` with its signature) and JSON output (``outputConfig.textFormat``) pass
through; upstream ``toolUse`` / ``reasoningContent`` deltas become canonical events as they arrive.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from ..events import StreamEvent
from ..request import MessageRequest
from ..wire.bedrock_upstream import converse_message, converse_tool_params
from ._threaded import iterate_in_thread
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
from .media_urls import inline_urls
from .resilience import RetryPolicy, UpstreamError, resilient_stream

# Bedrock error code (pre-stream ClientError or in-stream exception) -> canonical error type
CODE_TO_TYPE = {
    "ValidationException": "invalid_request_error",
    "validationException": "invalid_request_error",
    "AccessDeniedException": "permission_error",
    "UnrecognizedClientException": "authentication_error",
    "ResourceNotFoundException": "not_found_error",
    "ThrottlingException": "rate_limit_error",
    "throttlingException": "rate_limit_error",
    "ServiceUnavailableException": "overloaded_error",
    "serviceUnavailableException": "overloaded_error",
    "ModelNotReadyException": "overloaded_error",
    "ModelTimeoutException": "timeout_error",
    "InternalServerException": "api_error",
    "internalServerException": "api_error",
    "modelStreamErrorException": "api_error",
}
STOP_REASONS = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "model_context_window_exceeded": "max_tokens",
}


class _Blocks:
    """Upstream content blocks -> ours: Converse opens text and reasoning blocks with their
    first delta (only tool calls get ``contentBlockStart``), so those starts are made here."""

    def __init__(self) -> None:
        self.index: dict[int, int] = {}  # upstream contentBlockIndex -> ours
        self.open: set[int] = set()

    def start(self, upstream: int, make: Callable[[int], StreamEvent]) -> Iterator[StreamEvent]:
        if upstream not in self.index:
            ours = self.index[upstream] = len(self.index)
            self.open.add(ours)
            yield make(ours)

    def delta(self, item: dict[str, Any]) -> Iterator[StreamEvent]:
        upstream, delta = item.get("contentBlockIndex", 0), item["delta"]
        if "text" in delta:
            yield from self.start(upstream, text_block_start)
            yield text_delta(delta["text"], self.index[upstream])
        elif "toolUse" in delta and upstream in self.index:
            yield input_json_delta(delta["toolUse"].get("input", ""), self.index[upstream])
        elif "reasoningContent" in delta:
            reasoning = delta["reasoningContent"]
            if "text" in reasoning or "signature" in reasoning:
                yield from self.start(upstream, thinking_start)
            if "text" in reasoning:
                yield thinking_delta(reasoning["text"], self.index[upstream])
            if "signature" in reasoning:
                yield signature_delta(reasoning["signature"], self.index[upstream])

    def stop(self, upstream: int) -> Iterator[StreamEvent]:
        ours = self.index.get(upstream)
        if ours in self.open:
            self.open.discard(ours)
            yield block_stop(ours)

    def finish(self) -> Iterator[StreamEvent]:
        """Close what the upstream left open; an empty reply is one empty text block."""
        if not self.index:
            yield from self.start(0, text_block_start)
        for ours in sorted(self.open):
            yield block_stop(ours)
        self.open.clear()


def classify(error: BaseException) -> UpstreamError | None:
    from botocore import exceptions

    if isinstance(error, exceptions.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "") or str(error)
        return UpstreamError(CODE_TO_TYPE.get(code, "api_error"), f"bedrock: {code}: {message}")
    if isinstance(error, exceptions.NoCredentialsError | exceptions.PartialCredentialsError):
        return UpstreamError(
            "authentication_error",
            "bedrock: no AWS credentials (env, profile or role)",
            retryable=False,
        )
    if isinstance(error, exceptions.ReadTimeoutError | exceptions.ConnectTimeoutError):
        return UpstreamError("timeout_error", f"bedrock: {error}")
    if isinstance(error, exceptions.EndpointConnectionError):
        return UpstreamError(
            "api_error", f"bedrock: cannot reach {error.kwargs.get('endpoint_url')}"
        )
    if isinstance(error, exceptions.NoRegionError):
        return UpstreamError(
            "invalid_request_error",
            "bedrock: no AWS region; set AWS_DEFAULT_REGION or a profile region",
            retryable=False,
        )
    return None


class BedrockProvider:
    name = "bedrock"

    def __init__(self, model_id: str, *, policy: RetryPolicy | None = None):
        import boto3
        from botocore.config import Config

        self.model_id = model_id
        self.policy = policy or RetryPolicy.from_env()
        config = Config(
            retries={"total_max_attempts": 1},  # ours retry, and only before the first token
            connect_timeout=10,
            read_timeout=max(
                self.policy.first_token_timeout or 600, self.policy.idle_timeout or 600
            ),
        )
        try:
            self.client = boto3.client("bedrock-runtime", config=config)
        except Exception as error:  # e.g. NoRegionError: make it one clear line
            mapped = classify(error)
            raise (mapped or error) from error

    def _params(self, request: MessageRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "modelId": self.model_id,
            "messages": [converse_message(turn) for turn in request.messages],
            **converse_tool_params(request),
        }
        if request.system:
            params["system"] = [{"text": request.system}]
        config = {
            "maxTokens": request.max_tokens,
            "temperature": request.temperature,
            "topP": request.top_p,
            "stopSequences": request.stop_sequences or None,
        }
        params["inferenceConfig"] = {k: v for k, v in config.items() if v is not None}
        if request.top_k is not None:
            params.setdefault("additionalModelRequestFields", {})["top_k"] = request.top_k
        return params

    def _events(self, request: MessageRequest, cancel: threading.Event) -> Iterator[StreamEvent]:
        request = inline_urls(request, lambda block: False)  # Bedrock reads bytes and S3 only
        response = self.client.converse_stream(**self._params(request))
        stream = response["stream"]
        watcher = threading.Thread(target=lambda: cancel.wait() and stream.close(), daemon=True)
        watcher.start()
        stop_reason, output, input_tokens, deltas = "end_turn", None, None, 0
        cache: tuple[int | None, int | None] = (None, None)  # prompt-cache read, written
        blocks = _Blocks()
        try:
            for item in stream:
                if "contentBlockDelta" in item:
                    deltas += 1
                    yield from blocks.delta(item["contentBlockDelta"])
                elif "contentBlockStart" in item:
                    start = item["contentBlockStart"]
                    tool = start.get("start", {}).get("toolUse")
                    if tool is not None:
                        yield from blocks.start(
                            start.get("contentBlockIndex", 0),
                            lambda i, tool=tool: tool_use_start(i, tool["name"], tool["toolUseId"]),
                        )
                elif "contentBlockStop" in item:
                    yield from blocks.stop(item["contentBlockStop"].get("contentBlockIndex", 0))
                elif "messageStart" in item:
                    yield message_start(request.model, 0)
                elif "messageStop" in item:
                    stop_reason = STOP_REASONS.get(
                        item["messageStop"].get("stopReason"), "end_turn"
                    )
                elif "metadata" in item:
                    usage = item["metadata"].get("usage", {})
                    output, input_tokens = usage.get("outputTokens"), usage.get("inputTokens")
                    cache = usage.get("cacheReadInputTokens"), usage.get("cacheWriteInputTokens")
                    break
        finally:
            stream.close()  # the watcher ends when the consumer's side sets ``cancel``
        yield from blocks.finish()
        yield from with_cache_counts(
            message_finish(
                stop_reason, deltas if output is None else output, None, input_tokens=input_tokens
            ),
            *cache,
        )

    def stream(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        return resilient_stream(
            lambda: iterate_in_thread(lambda cancel: self._events(request, cancel)),
            self.policy,
            classify,
        )
