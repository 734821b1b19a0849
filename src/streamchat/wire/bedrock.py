"""Bedrock Runtime on the wire, sans-IO: request bodies in, eventstream frames and JSON out.

Every Bedrock name lives here as data: Converse field names, Converse stream event names,
error codes and statuses. Shapes follow botocore's service model
(``botocore/data/bedrock-runtime/2023-09-30/service-2.json``), the judge of what boto3 accepts.
Two APIs share it: Converse (Bedrock's own shape) and invoke (the Anthropic Messages shape with
``anthropic_version``, used by ``anthropic.AnthropicBedrock``).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import InvalidRequestError
from ..events import Message, StreamEvent
from ..request import MessageRequest, build_request
from .anthropic import parse_messages_request
from .eventstream import encode_message

EVENTSTREAM_MEDIA_TYPE = "application/vnd.amazon.eventstream"
DEFAULT_MAX_TOKENS = 1024  # Converse's maxTokens is optional; Bedrock defaults to the model max


class BedrockError(NamedTuple):
    code: str  # x-amzn-ErrorType before the stream
    status: int
    stream: str  # :exception-type once streaming (a member of ConverseStreamOutput/ResponseStream)


# canonical error type -> how Bedrock reports it
ERRORS: dict[str, BedrockError] = {
    "invalid_request_error": BedrockError("ValidationException", 400, "validationException"),
    "request_too_large": BedrockError("ValidationException", 400, "validationException"),
    "authentication_error": BedrockError(
        "UnrecognizedClientException", 403, "modelStreamErrorException"
    ),
    "permission_error": BedrockError("AccessDeniedException", 403, "modelStreamErrorException"),
    "not_found_error": BedrockError("ResourceNotFoundException", 404, "modelStreamErrorException"),
    "timeout_error": BedrockError("ModelTimeoutException", 408, "modelStreamErrorException"),
    "rate_limit_error": BedrockError("ThrottlingException", 429, "throttlingException"),
    "overloaded_error": BedrockError("ThrottlingException", 429, "throttlingException"),
    "api_error": BedrockError("InternalServerException", 500, "internalServerException"),
}
INTERNAL_ERROR = ERRORS["api_error"]

# canonical request field -> the Converse field a validation error should name
CONVERSE_FIELDS: dict[str, str] = {
    "max_tokens": "inferenceConfig.maxTokens",
    "temperature": "inferenceConfig.temperature",
    "top_p": "inferenceConfig.topP",
    "stop_sequences": "inferenceConfig.stopSequences",
    "top_k": "additionalModelRequestFields.top_k",
}
_INFERENCE_CONFIG = {
    v.rpartition(".")[2]: k for k, v in CONVERSE_FIELDS.items() if v.startswith("inferenceConfig.")
}
_IGNORED_BLOCKS = {"cachePoint"}  # prompt-cache markers carry no text


# -- requests ----------------------------------------------------------------------------------
def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"{where}: expected an object")
    return value


def _blocks_text(blocks: Any, where: str, separator: str = "") -> str:
    """Converse content blocks (``[{"text": ...}]``) to text; other block kinds are refused."""
    if not isinstance(blocks, list):
        raise InvalidRequestError(f"{where}: expected a list of content blocks")
    parts = []
    for i, block in enumerate(blocks):
        kinds = list(_object(block, f"{where}.{i}"))
        if kinds == ["text"]:
            if not isinstance(block["text"], str):
                raise InvalidRequestError(f"{where}.{i}.text: expected a string")
            parts.append(block["text"])
        elif not kinds or not set(kinds) <= _IGNORED_BLOCKS:
            raise InvalidRequestError(
                f"{where}.{i}: only text content blocks are supported (got {', '.join(kinds)})"
            )
    return separator.join(parts)


def converse_kwargs(body: Any, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, Any]:
    """A Converse request body -> keyword arguments for :func:`build_request` (minus model)."""
    body = _object(body, "request body")
    if body.get("toolConfig"):
        raise InvalidRequestError("toolConfig: tool use is not supported by this server")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages: at least one message is required")
    turns = []
    for i, message in enumerate(messages):
        message = _object(message, f"messages.{i}")
        content = message.get("content")
        if not content:
            raise InvalidRequestError(
                f"messages.{i}.content: at least one content block is required"
            )
        text = _blocks_text(content, f"messages.{i}.content")
        turns.append({"role": message.get("role"), "content": text})
    kwargs: dict[str, Any] = {"messages": turns, "max_tokens": default_max_tokens}
    if body.get("system"):
        kwargs["system"] = _blocks_text(body["system"], "system", "\n")
    config = _object(body.get("inferenceConfig") or {}, "inferenceConfig")
    kwargs.update({_INFERENCE_CONFIG[k]: v for k, v in config.items() if k in _INFERENCE_CONFIG})
    extra = _object(body.get("additionalModelRequestFields") or {}, "additionalModelRequestFields")
    if "top_k" in extra:
        kwargs["top_k"] = extra["top_k"]
    return kwargs


def build_converse_request(body: Any, *, model: str, max_tokens_limit: int) -> MessageRequest:
    """Validate a Converse body; errors name the Converse field (``inferenceConfig.maxTokens``)."""
    kwargs = converse_kwargs(body, min(DEFAULT_MAX_TOKENS, max_tokens_limit))
    try:
        return build_request(model=model, max_tokens_limit=max_tokens_limit, **kwargs)
    except InvalidRequestError as error:
        field, sep, rest = error.message.partition(":")
        if sep and field in CONVERSE_FIELDS:
            raise InvalidRequestError(f"{CONVERSE_FIELDS[field]}:{rest}") from None
        raise


def build_invoke_request(body: Any, *, model: str, max_tokens_limit: int) -> MessageRequest:
    """An invoke body: Anthropic Messages + ``anthropic_version``, the model from the path."""
    body = _object(body, "request body")
    if "anthropic_version" not in body:
        raise InvalidRequestError("anthropic_version: field required")
    kwargs, _ = parse_messages_request({**body, "model": model, "stream": False})
    return build_request(**kwargs, max_tokens_limit=max_tokens_limit)


# -- responses ---------------------------------------------------------------------------------
def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    total = input_tokens + output_tokens
    return {"inputTokens": input_tokens, "outputTokens": output_tokens, "totalTokens": total}


def _millis(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def converse_response(message: Message, latency: float) -> dict[str, Any]:
    """The Converse JSON for a finished message (``latency`` in seconds)."""
    content = [{"text": block.text} for block in message.content] or [{"text": ""}]
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": message.stop_reason or "end_turn",
        "usage": _usage(message.usage.input_tokens, message.usage.output_tokens),
        "metrics": {"latencyMs": _millis(latency)},
    }


def invoke_headers(message: Message, latency: float) -> dict[str, str]:
    """The invocation metrics Bedrock sends as headers with a non-streaming invoke."""
    return {
        "X-Amzn-Bedrock-Input-Token-Count": str(message.usage.input_tokens),
        "X-Amzn-Bedrock-Output-Token-Count": str(message.usage.output_tokens),
        "X-Amzn-Bedrock-Invocation-Latency": str(_millis(latency)),
    }


def error_response(error_type: str, message: str) -> tuple[int, dict[str, str], dict[str, str]]:
    """``(status, headers, body)`` for an error before any byte of the response was sent."""
    error = ERRORS.get(error_type, INTERNAL_ERROR)
    return error.status, {"x-amzn-ErrorType": error.code}, {"message": message}


# -- streams -----------------------------------------------------------------------------------
_JSON_EVENT = {":content-type": "application/json", ":message-type": "event"}
_JSON_EXCEPTION = {":content-type": "application/json", ":message-type": "exception"}


def event_message(event_type: str, payload: Mapping[str, Any]) -> bytes:
    headers = {":event-type": event_type, **_JSON_EVENT}
    return encode_message(headers, json.dumps(payload, ensure_ascii=False).encode())


def exception_message(error_type: str, message: str) -> bytes:
    """A mid-stream error: botocore raises ``EventStreamError`` with this exception type."""
    name = ERRORS.get(error_type, INTERNAL_ERROR).stream
    headers = {":exception-type": name, **_JSON_EXCEPTION}
    return encode_message(headers, json.dumps({"message": message}).encode())


@dataclass(slots=True)
class _Tally:
    """What Bedrock reports at the end of a stream, gathered from the events on the way."""

    started: float
    first: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0

    def see(self, event: StreamEvent) -> None:
        if self.first is None:
            self.first = event.timestamp
        if event.type == "message_start":
            self.input_tokens = event.message.usage.input_tokens
        elif event.type == "message_delta":
            self.output_tokens = event.usage.output_tokens
            if event.usage.input_tokens is not None:  # backends that count the prompt late
                self.input_tokens = event.usage.input_tokens


# canonical event type -> (Converse stream event, payload); text blocks have no contentBlockStart
# (ContentBlockStart has no text member), and Converse has no pings.
CONVERSE_EVENTS: dict[str, tuple[str, Callable[[Any, _Tally], dict[str, Any]]]] = {
    "message_start": ("messageStart", lambda e, t: {"role": e.message.role}),
    "content_block_delta": (
        "contentBlockDelta",
        lambda e, t: {"contentBlockIndex": e.index, "delta": {"text": e.delta.text}},
    ),
    "content_block_stop": ("contentBlockStop", lambda e, t: {"contentBlockIndex": e.index}),
    "message_delta": (
        "messageStop",
        lambda e, t: {"stopReason": e.delta.stop_reason or "end_turn"},
    ),
    "message_stop": (
        "metadata",
        lambda e, t: {
            "usage": _usage(t.input_tokens, t.output_tokens),
            "metrics": {"latencyMs": _millis(e.timestamp - t.started)},
        },
    ),
}


class ConverseStreamEncoder:
    """Canonical events -> ``/converse-stream`` frames (``started``: perf_counter at request)."""

    def __init__(self, started: float) -> None:
        self.tally = _Tally(started)

    def encode(self, event: StreamEvent) -> bytes:
        self.tally.see(event)
        if event.type == "error":
            return exception_message(event.error.type, event.error.message)
        mapping = CONVERSE_EVENTS.get(event.type)
        if mapping is None:
            return b""
        name, payload = mapping
        return event_message(name, payload(event, self.tally))


class InvokeStreamEncoder:
    """Canonical events -> ``/invoke-with-response-stream`` frames: base64 Anthropic events."""

    def __init__(self, started: float) -> None:
        self.tally = _Tally(started)

    def encode(self, event: StreamEvent) -> bytes:
        tally = self.tally
        tally.see(event)
        if event.type == "error":
            return exception_message(event.error.type, event.error.message)
        data = event.to_dict()
        if event.type == "message_stop":
            data["amazon-bedrock-invocationMetrics"] = {
                "inputTokenCount": tally.input_tokens,
                "outputTokenCount": tally.output_tokens,
                "invocationLatency": _millis(event.timestamp - tally.started),
                "firstByteLatency": _millis((tally.first or event.timestamp) - tally.started),
            }
        raw = json.dumps(data, ensure_ascii=False).encode()
        return event_message("chunk", {"bytes": base64.b64encode(raw).decode("ascii")})


# -- auth --------------------------------------------------------------------------------------
_CREDENTIAL = re.compile(r"\bCredential=([^/,\s]+)/")


def client_key(authorization: str | None) -> str | None:
    """The key a Bedrock client presents: the SigV4 access key id, or a bearer API key.

    The signature itself is not checked (the server knows no secret key): the access key id
    plays the role of the API key.
    """
    if not authorization:
        return None
    scheme, _, rest = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip() or None
    if scheme.upper().startswith("AWS4-"):
        match = _CREDENTIAL.search(rest)
        return match.group(1) if match else None
    return None
