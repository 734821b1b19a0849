"""``bedrock/<modelId>``: Amazon Bedrock's Converse API through ``boto3`` (``converse_stream``).

Credentials, region and endpoint come the usual AWS way (env, profile, instance role;
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` or ``--endpoint-url``). boto3 blocks, so each attempt runs in
a worker thread; a watcher closes the HTTP stream as soon as the consumer goes away.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..events import StreamEvent
from ..request import MessageRequest
from ._threaded import iterate_in_thread
from .base import message_end, message_start, text_block_start, text_delta
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
}


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
            "messages": [
                {"role": t.role, "content": [{"text": t.content}]} for t in request.messages
            ],
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
            params["additionalModelRequestFields"] = {"top_k": request.top_k}
        return params

    def _events(self, request: MessageRequest, cancel: threading.Event) -> Iterator[StreamEvent]:
        response = self.client.converse_stream(**self._params(request))
        stream = response["stream"]
        watcher = threading.Thread(target=lambda: cancel.wait() and stream.close(), daemon=True)
        watcher.start()
        stop_reason, output, input_tokens, deltas = "end_turn", None, None, 0
        try:
            for item in stream:
                if "contentBlockDelta" in item:
                    text = item["contentBlockDelta"]["delta"].get("text")
                    if text:
                        deltas += 1
                        yield text_delta(text)
                elif "messageStart" in item:
                    yield message_start(request.model, 0)
                    yield text_block_start()
                elif "messageStop" in item:
                    stop_reason = STOP_REASONS.get(
                        item["messageStop"].get("stopReason"), "end_turn"
                    )
                elif "metadata" in item:
                    usage = item["metadata"].get("usage", {})
                    output, input_tokens = usage.get("outputTokens"), usage.get("inputTokens")
                    break
        finally:
            stream.close()  # the watcher ends when the consumer's side sets ``cancel``
        yield from message_end(
            stop_reason, deltas if output is None else output, None, input_tokens=input_tokens
        )

    def stream(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        return resilient_stream(
            lambda: iterate_in_thread(lambda cancel: self._events(request, cancel)),
            self.policy,
            classify,
        )
