"""Anthropic Messages API codec, sans-IO: request JSON in, SSE frames / response JSON out.

Canonical events already have the Messages streaming shape (tool_use / thinking blocks and
their ``input_json`` / ``thinking`` / ``signature`` deltas included), so encoding is
``event.to_dict()`` in an SSE frame; the work here is validating requests the way the API does
(``max_tokens`` is required, errors name the field) and rendering errors as
``{"type": "error", "error": {...}}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ERROR_STATUS, InvalidRequestError, StreamchatError
from ..events import ErrorBody, ErrorEvent, Message, StreamEvent
from .sse import encode_sse

# Request fields passed through to build_request unchanged (metadata & co. are accepted, unused).
_PASSTHROUGH = (
    "system",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "tool_choice",
    "thinking",
)
# What count_tokens counts (it takes no max_tokens and no sampling settings).
_COUNTED = ("system", "tool_choice", "thinking")
# Client tools (``custom``, or no type) run on the caller's side; Anthropic's server tools
# (web search, code execution...) would need a server that runs them.
_CLIENT_TOOL_TYPES = (None, "custom")
EPOCH_RFC3339 = "1970-01-01T00:00:00Z"  # "an epoch value if the release date is unknown"


def _require_object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise InvalidRequestError("request body: expected a JSON object")
    return body


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise InvalidRequestError("field required", path="model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("expected a non-empty string", path="model")
    return model


def _tools(body: Mapping[str, Any]) -> Any:
    """``tools`` for build_request, refusing server tools by their ``type``."""
    tools = body.get("tools")
    if isinstance(tools, list):
        for i, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, Mapping) else None
            if kind not in _CLIENT_TOOL_TYPES:
                raise InvalidRequestError(
                    f"server tools ({kind!r}) are not supported; "
                    "only client tools (type 'custom') are",
                    path=f"tools.{i}.type",
                )
    return tools


def _output_format(body: Mapping[str, Any]) -> Any:
    """Structured output: ``output_config.format`` (GA) or the beta's ``output_format``."""
    config = body.get("output_config")
    if config is not None:
        if not isinstance(config, Mapping):
            raise InvalidRequestError("expected an object", path="output_config")
        if config.get("format") is not None:
            if body.get("output_format") is not None:
                raise InvalidRequestError(
                    "give either output_format or output_config.format, not both",
                    path="output_format",
                )
            fmt = config["format"]
            if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
                raise InvalidRequestError("must be 'json_schema'", path="output_config.format.type")
            return fmt
    fmt = body.get("output_format")
    if fmt is not None and (not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema"):
        raise InvalidRequestError("must be 'json_schema'", path="output_format.type")
    return fmt


def _optional(body: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The fields of ``names`` present in ``body`` plus tools and output format."""
    kwargs = {name: body[name] for name in names if body.get(name) is not None}
    if body.get("tools") is not None:
        kwargs["tools"] = _tools(body)
    output_format = _output_format(body)
    if output_format is not None:
        kwargs["output_format"] = output_format
    return kwargs


def parse_messages_request(body: Any) -> tuple[dict[str, Any], bool]:
    """``(build_request kwargs, stream?)`` for a ``POST /v1/messages`` body."""
    body = _require_object(body)
    kwargs: dict[str, Any] = {"model": _model(body), "messages": body.get("messages")}
    if body.get("max_tokens") is None:
        raise InvalidRequestError("field required", path="max_tokens")
    kwargs["max_tokens"] = body["max_tokens"]
    kwargs.update(_optional(body, _PASSTHROUGH))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("expected a boolean", path="stream")
    return kwargs, stream


def parse_count_tokens_request(body: Any) -> dict[str, Any]:
    """build_request kwargs for ``POST /v1/messages/count_tokens`` (no ``max_tokens`` there):
    tools and system count as input too."""
    body = _require_object(body)
    kwargs: dict[str, Any] = {"model": _model(body), "messages": body.get("messages")}
    kwargs.update(_optional(body, _COUNTED))
    return kwargs


def _frame(data: dict[str, Any], event: str) -> bytes:
    return encode_sse(event, json.dumps(data, ensure_ascii=False, separators=(",", ":")))


def encode_event(event: StreamEvent) -> bytes:
    """``event: <type>\\ndata: <json>\\n\\n`` — the frame the SDK's SSE decoder expects."""
    return _frame(event.to_dict(), event.type)


def encode_error_event(error: StreamchatError) -> bytes:
    """The in-stream error frame, for failures after the 200 status line went out."""
    return encode_event(ErrorEvent(ErrorBody(error.error_type, error.message)))


def message_body(message: Message) -> dict[str, Any]:
    """The non-streaming response: the accumulated message, every block, as the API returns it."""
    return message.to_dict()


def count_tokens_body(input_tokens: int) -> dict[str, Any]:
    return {"input_tokens": input_tokens}


def error_response(error: StreamchatError) -> tuple[int, dict[str, Any]]:
    """``(HTTP status, body)`` for an error raised before streaming began."""
    return ERROR_STATUS.get(error.error_type, 500), error.to_dict()


def models_body(models: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``GET /v1/models`` in the Anthropic shape, from ``(id, display name)`` pairs."""
    data = [
        {
            "type": "model",
            "id": model_id,
            "display_name": display_name,
            "created_at": EPOCH_RFC3339,
            "lifecycle": "active",
        }
        for model_id, display_name in models
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
