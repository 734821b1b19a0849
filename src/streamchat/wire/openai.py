"""OpenAI Chat Completions codec, sans-IO: request JSON in, ``chat.completion(.chunk)`` JSON out.

Canonical events are Anthropic-shaped, so this module translates: system/developer messages fold
into ``system``, stop reasons become finish reasons, usage gets OpenAI's names, and errors get
OpenAI's ``{"error": {message, type, param, code}}`` body with OpenAI's statuses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ERROR_STATUS, InvalidRequestError, StreamchatError, error_from_type
from ..events import Message, StreamEvent
from ..request import content_text
from .sse import encode_sse

FINISH_REASONS: dict[str | None, str | None] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    None: None,
}
# Canonical error type -> (OpenAI status where it differs, OpenAI ``code``). OpenAI has no 529:
# overload is a 429 there, which its SDK retries as a rate limit.
ERRORS: dict[str, tuple[int | None, str | None]] = {
    "authentication_error": (None, "invalid_api_key"),
    "not_found_error": (None, "model_not_found"),
    "rate_limit_error": (None, "rate_limit_exceeded"),
    "overloaded_error": (429, "server_overloaded"),
    "api_error": (None, "server_error"),
}
SYSTEM_ROLES = ("system", "developer")
CHAT_ROLES = ("user", "assistant")
DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"  # OpenAI has no ping chunk; an SSE comment keeps proxies awake, SDKs skip it


@dataclass(slots=True)
class ChatOptions:
    """What the request asks of the response, beyond what providers see."""

    stream: bool = False
    include_usage: bool = False
    # canonical request field -> the parameter name this client sent it as
    params: dict[str, str] = field(default_factory=lambda: {"stop_sequences": "stop"})

    def rename(self, error: StreamchatError) -> StreamchatError:
        """Name the client's own parameter in a validation message (``max_tokens`` -> ...)."""
        name, sep, rest = error.message.partition(":")
        if sep and name in self.params:
            error.message = f"{self.params[name]}:{rest}"
            error.args = (error.message,)
        return error


def _messages(messages: Any) -> tuple[list[dict[str, str]], str | None]:
    """Chat turns and the folded system prompt; errors index the client's own list."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages: at least one message is required")
    turns: list[dict[str, str]] = []
    system: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidRequestError(f"messages.{i}: expected an object with role and content")
        role = message.get("role")
        if role not in SYSTEM_ROLES + CHAT_ROLES:
            allowed = ", ".join(SYSTEM_ROLES + CHAT_ROLES)
            raise InvalidRequestError(f"messages.{i}.role: must be one of {allowed}, got {role!r}")
        if message.get("content") is None:
            raise InvalidRequestError(f"messages.{i}.content: field required")
        text = content_text(message["content"], f"messages.{i}.content")
        if role in SYSTEM_ROLES:
            system.append(text)
        else:
            turns.append({"role": role, "content": text})
    return turns, "\n\n".join(system) if system else None


def parse_chat_request(body: Any) -> tuple[dict[str, Any], ChatOptions]:
    """``(build_request kwargs, options)`` for a ``POST /v1/chat/completions`` body."""
    if not isinstance(body, Mapping):
        raise InvalidRequestError("request body: expected a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("model: field required (a non-empty string)")
    if body.get("n") not in (None, 1):
        raise InvalidRequestError("n: only n=1 is supported")
    if body.get("tools"):
        raise InvalidRequestError("tools: tool calls are not supported by this server")
    turns, system = _messages(body.get("messages"))
    kwargs: dict[str, Any] = {"model": model, "messages": turns, "system": system}
    parsed = ChatOptions()
    for name in ("max_completion_tokens", "max_tokens"):
        if body.get(name) is not None:
            kwargs["max_tokens"] = body[name]
            parsed.params["max_tokens"] = name
            break
    if body.get("stop") is not None:
        kwargs["stop_sequences"] = body["stop"]
    kwargs.update({k: body[k] for k in ("temperature", "top_p", "seed") if body.get(k) is not None})
    stream = False if body.get("stream") is None else body["stream"]
    options = body.get("stream_options") or {}
    if not isinstance(stream, bool):
        raise InvalidRequestError("stream: expected a boolean")
    if not isinstance(options, Mapping):
        raise InvalidRequestError("stream_options: expected an object")
    parsed.stream, parsed.include_usage = stream, bool(options.get("include_usage"))
    return kwargs, parsed


def error_response(error: StreamchatError) -> tuple[int, dict[str, Any]]:
    """``(HTTP status, body)`` in OpenAI's error shape; ``param`` names the offending field."""
    status, code = ERRORS.get(error.error_type, (None, None))
    name, sep, _ = error.message.partition(":")
    param = name if sep and name and " " not in name else None
    body = {"message": error.message, "type": error.error_type, "param": param, "code": code}
    return status or ERROR_STATUS.get(error.error_type, 500), {"error": body}


def _data(payload: dict[str, Any]) -> bytes:
    return encode_sse(None, json.dumps(payload, ensure_ascii=False, separators=(",", ":")))


def encode_error(error: StreamchatError) -> bytes:
    """``data: {"error": {...}}`` — the openai SDK raises ``APIError`` on a chunk like this."""
    return _data(error_response(error)[1])


def usage_body(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


def completion_id(message_id: str) -> str:
    return "chatcmpl-" + message_id.removeprefix("msg_")


class ChunkEncoder:
    """Canonical events -> ``chat.completion.chunk`` SSE frames, for one response.

    Stateful because OpenAI spreads what one Anthropic event says over several chunks: the id
    and prompt tokens arrive in ``message_start`` but the usage chunk goes out at the end.
    """

    def __init__(self, model: str, *, include_usage: bool = False, created: int | None = None):
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time()) if created is None else created
        self.id = "chatcmpl-"
        self.input_tokens = 0
        self.output_tokens = 0

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        payload: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            payload["usage"] = None
        payload.update(extra)
        return _data(payload)

    def _choice(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def encode(self, event: StreamEvent) -> bytes:
        """The bytes to send for one event (``b""`` for events OpenAI has no chunk for)."""
        kind = event.type
        if kind == "content_block_delta":
            return self._chunk([self._choice({"content": event.delta.text})])
        if kind == "message_start":
            self.id = completion_id(event.message.id)
            self.input_tokens = event.message.usage.input_tokens
            return self._chunk([self._choice({"role": "assistant", "content": ""})])
        if kind == "message_delta":
            self.output_tokens = event.usage.output_tokens
            if event.usage.input_tokens is not None:  # backends that count the prompt late
                self.input_tokens = event.usage.input_tokens
            finish = FINISH_REASONS.get(event.delta.stop_reason, "stop")
            return self._chunk([self._choice({}, finish)])
        if kind == "message_stop":
            usage = usage_body(self.input_tokens, self.output_tokens)
            tail = self._chunk([], usage=usage) if self.include_usage else b""
            return tail + DONE
        if kind == "error":
            return encode_error(error_from_type(event.error.type, event.error.message))
        if kind == "ping":
            return PING
        return b""  # content_block_start/stop


def completion_body(message: Message, model: str, created: int | None = None) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` response for an accumulated message."""
    return {
        "id": completion_id(message.id),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": message.text, "refusal": None},
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(message.stop_reason, "stop"),
            }
        ],
        "usage": usage_body(message.usage.input_tokens, message.usage.output_tokens),
    }


def models_body(model_ids: Iterable[str], owned_by: str = "streamchat") -> dict[str, Any]:
    """``GET /v1/models`` in the OpenAI shape (``created`` 0: the release date is unknown)."""
    data = [{"id": m, "object": "model", "created": 0, "owned_by": owned_by} for m in model_ids]
    return {"object": "list", "data": data}
