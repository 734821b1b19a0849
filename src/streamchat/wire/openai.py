"""OpenAI Chat Completions codec, sans-IO: request JSON in, ``chat.completion(.chunk)`` JSON out.

Canonical events are Anthropic-shaped, so this module translates: system/developer messages fold
into ``system``, ``tool`` messages become ``tool_result`` blocks of a user turn, stop reasons
become finish reasons, usage gets OpenAI's names, and errors get OpenAI's ``{"error": {message,
type, param, code}}`` body with OpenAI's statuses. The other way, a canonical request as the
``openai/`` provider sends it upstream, is :mod:`.openai_upstream`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..accumulate import merge_usage
from ..errors import (
    ERROR_STATUS,
    InvalidRequestError,
    ModelNotFoundError,
    StreamchatError,
    error_from_type,
    field_name,
)
from ..events import Message, StreamEvent, TextBlock, ToolResultBlock, ToolUseBlock, Usage
from ..media import OPENAI_LIMITS, MediaBlock, from_openai_part
from ..request import MAX_TOOLS, OutputFormat, content_text
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
    "not_found_error": (None, None),  # a model's: model_not_found (error_response)
    "rate_limit_error": (None, "rate_limit_exceeded"),
    "overloaded_error": (429, "server_overloaded"),
    "api_error": (None, "server_error"),
}
SYSTEM_ROLES = ("system", "developer")
MEDIA_PARTS = ("image_url", "file", "input_audio")
CHAT_ROLES = ("user", "assistant", "tool")
# OpenAI ``tool_choice`` string -> canonical tool choice (openai_upstream.py maps it back)
TOOL_CHOICES: dict[str, str] = {"auto": "auto", "none": "none", "required": "any"}
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
# canonical request field -> the parameter this client sent ("#" any index; a field's children
# follow it: output_format.schema.x -> response_format.json_schema.schema.x)
PARAMS: dict[str, str] = {
    "tools.#.input_schema": "tools.#.function.parameters",
    "tools.#.name": "tools.#.function.name",
    "tools.#.description": "tools.#.function.description",
    "tool_choice.name": "tool_choice.function.name",
    "output_format.schema": "response_format.json_schema.schema",
    "output_format": "response_format",
    "thinking": "reasoning_effort",
    "stop_sequences": "stop",
}
# Canonical delta type -> the chunk ``delta`` field carrying it (and the delta's attribute).
# Thinking goes out as ``reasoning_content``, as vLLM and DeepSeek-style servers send it; the
# signature has no place in OpenAI's shape and is dropped.
DELTA_FIELDS: dict[str, tuple[str, str]] = {
    "text_delta": ("content", "text"),
    "thinking_delta": ("reasoning_content", "thinking"),
}
DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"  # OpenAI has no ping chunk; an SSE comment keeps proxies awake, SDKs skip it


@dataclass(slots=True)
class ChatOptions:
    """What the request asks of the response, beyond what providers see."""

    stream: bool = False
    include_usage: bool = False
    # canonical request field -> the parameter name this client sent it as, beside PARAMS
    params: dict[str, str] = field(default_factory=dict)

    def rename(self, error: StreamchatError) -> StreamchatError:
        """Name the client's own parameter in a validation error (``max_tokens`` -> ...)."""
        if error.path is not None:
            renamed = field_name(error.path, {**PARAMS, **self.params})
            if renamed is not None:
                error.rename(renamed)
        return error


def _arguments(arguments: Any, where: str) -> dict[str, Any]:
    """A call's ``arguments``: a JSON string holding an object (blank means no arguments)."""
    if not isinstance(arguments, str):
        raise InvalidRequestError("expected a JSON string", path=where)
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError as error:
        raise InvalidRequestError(f"not valid JSON ({error})", path=where) from None
    if not isinstance(value, dict):
        raise InvalidRequestError(f"must be a JSON object, got {type(value).__name__}", path=where)
    return value


def _tool_calls(calls: Any, where: str) -> list[ToolUseBlock]:
    """An assistant message's ``tool_calls`` as canonical tool_use blocks."""
    if not isinstance(calls, list):
        raise InvalidRequestError("expected a list of tool calls", path=where)
    blocks: list[ToolUseBlock] = []
    for j, call in enumerate(calls):
        at = f"{where}.{j}"
        if not isinstance(call, Mapping):
            raise InvalidRequestError("expected an object", path=at)
        if call.get("type", "function") != "function":
            raise InvalidRequestError("only 'function' tool calls are supported", path=f"{at}.type")
        if not isinstance(call.get("id"), str) or not call["id"]:
            raise InvalidRequestError("field required (a non-empty string)", path=f"{at}.id")
        function = call.get("function")
        if not isinstance(function, Mapping):
            raise InvalidRequestError("field required", path=f"{at}.function")
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise InvalidRequestError(
                "field required (a non-empty string)", path=f"{at}.function.name"
            )
        arguments = _arguments(function.get("arguments"), f"{at}.function.arguments")
        blocks.append(ToolUseBlock(id=call["id"], name=function["name"], input=arguments))
    return blocks


def _user_blocks(content: Any, where: str) -> list[TextBlock | MediaBlock] | None:
    """A user message's parts as blocks when it holds images or files (else ``None``)."""
    if not isinstance(content, list) or not any(
        isinstance(part, Mapping) and part.get("type") in MEDIA_PARTS for part in content
    ):
        return None
    blocks: list[TextBlock | MediaBlock] = []
    for j, part in enumerate(content):
        at = f"{where}.{j}"
        if isinstance(part, Mapping) and part.get("type") in MEDIA_PARTS:
            if part["type"] == "input_audio":
                raise InvalidRequestError("audio input is not supported", path=f"{at}.type")
            blocks.append(from_openai_part(part, at))
        else:
            blocks.append(TextBlock(content_text([part], at)))
    return blocks


def _messages(messages: Any) -> tuple[list[dict[str, Any]], str | None]:
    """Chat turns and the folded system prompt; errors index the client's own list.

    ``tool`` messages answer the calls of the assistant message before them and join one user
    turn (with any user message that follows), which is how the canonical model holds results.
    """
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("at least one message is required", path="messages")
    turns: list[dict[str, Any]] = []
    system: list[str] = []
    calls: set[str] = set()  # ids the latest assistant message called
    results: list[Any] | None = None  # the open user turn holding tool results
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidRequestError(
                "expected an object with role and content", path=f"messages.{i}"
            )
        role = message.get("role")
        if role not in SYSTEM_ROLES + CHAT_ROLES:
            allowed = ", ".join(SYSTEM_ROLES + CHAT_ROLES)
            raise InvalidRequestError(
                f"must be one of {allowed}, got {role!r}", path=f"messages.{i}.role"
            )
        content = message.get("content")
        tool_calls = message.get("tool_calls") if role == "assistant" else None
        if content is None and not tool_calls:
            raise InvalidRequestError("field required", path=f"messages.{i}.content")
        parts = _user_blocks(content, f"messages.{i}.content") if role == "user" else None
        text = (
            ""
            if content is None or parts is not None
            else content_text(content, f"messages.{i}.content")
        )
        if role in SYSTEM_ROLES:
            system.append(text)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str):
                raise InvalidRequestError("field required", path=f"messages.{i}.tool_call_id")
            if call_id not in calls:
                raise InvalidRequestError(
                    f"{call_id!r} matches no tool call of the previous assistant message",
                    path=f"messages.{i}.tool_call_id",
                )
            if results is None:
                results = []
                turns.append({"role": "user", "content": results})
            results.append(ToolResultBlock(tool_use_id=call_id, content=[text]))
        elif role == "user":
            calls = set()
            if results is not None:
                results.extend(parts if parts is not None else [TextBlock(text)])
                results = None
            else:
                turns.append({"role": "user", "content": text if parts is None else parts})
        else:
            blocks = _tool_calls(tool_calls, f"messages.{i}.tool_calls") if tool_calls else []
            calls, results = {block.id for block in blocks}, None
            lead = [TextBlock(text)] if text else []
            turns.append({"role": "assistant", "content": [*lead, *blocks] if blocks else text})
    return turns, "\n\n".join(system) if system else None


def _tools(tools: Any) -> list[dict[str, Any]] | None:
    """OpenAI function tools as Anthropic-shaped tools (``parameters`` defaults to no
    arguments); build_request checks names, duplicates and schemas."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InvalidRequestError("expected a list of tools", path="tools")
    if len(tools) > MAX_TOOLS:
        raise InvalidRequestError(
            f"at most {MAX_TOOLS} tools are allowed, got {len(tools)}", path="tools"
        )
    parsed: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise InvalidRequestError("expected an object", path=f"tools.{i}")
        if tool.get("type") != "function":
            raise InvalidRequestError(
                f"only 'function' tools are supported, got {tool.get('type')!r}",
                path=f"tools.{i}.type",
            )
        function = tool.get("function")
        if not isinstance(function, Mapping):
            raise InvalidRequestError("field required", path=f"tools.{i}.function")
        schema = function.get("parameters")
        parsed.append(
            {
                "name": function.get("name"),
                "description": function.get("description") or "",
                "input_schema": {"type": "object", "properties": {}} if schema is None else schema,
                "strict": function.get("strict"),
            }
        )
    return parsed


def _tool_choice(choice: Any, tools: list[dict[str, Any]], parallel: Any) -> dict[str, Any] | None:
    """``tool_choice`` and ``parallel_tool_calls`` as one canonical tool choice."""
    if parallel is not None and not isinstance(parallel, bool):
        raise InvalidRequestError("expected a boolean", path="parallel_tool_calls")
    if choice is None:
        parsed = None
    elif isinstance(choice, str):
        if choice not in TOOL_CHOICES:
            raise InvalidRequestError(
                f"must be 'none', 'auto', 'required' or a function, got {choice!r}",
                path="tool_choice",
            )
        parsed = {"type": TOOL_CHOICES[choice]}
    elif isinstance(choice, Mapping):
        if choice.get("type") != "function":
            raise InvalidRequestError(
                f"must be 'function', got {choice.get('type')!r}", path="tool_choice.type"
            )
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str):
            raise InvalidRequestError("field required", path="tool_choice.function.name")
        if not any(tool["name"] == name for tool in tools):
            raise InvalidRequestError(
                f"no function named {name!r} in tools", path="tool_choice.function.name"
            )
        parsed = {"type": "tool", "name": name}
    else:
        raise InvalidRequestError("expected a string or an object", path="tool_choice")
    if parsed is not None and parsed["type"] == "any" and not tools:
        raise InvalidRequestError(
            "'required' needs at least one function in tools", path="tool_choice"
        )
    if parallel is False:
        parsed = {"type": "auto", **(parsed or {}), "disable_parallel_tool_use": True}
    return parsed


def _response_format(value: Any) -> dict[str, Any] | OutputFormat | None:
    """``response_format`` as a canonical JSON-output request (``text`` asks for none)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRequestError("expected an object", path="response_format")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise InvalidRequestError(
            f"must be one of text, json_object, json_schema, got {kind!r}",
            path="response_format.type",
        )
    spec = value.get("json_schema")
    if not isinstance(spec, Mapping):
        raise InvalidRequestError("field required", path="response_format.json_schema")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError("field required", path="response_format.json_schema.name")
    if spec.get("schema") is None:
        return OutputFormat(None, name)  # a named format without a schema: any JSON object
    return {
        "type": "json_schema",
        "schema": spec["schema"],
        "name": name,
        "strict": spec.get("strict"),
    }


def _reasoning(effort: Any) -> dict[str, Any] | None:
    """``reasoning_effort`` switches thinking on (its size is the model's to choose)."""
    if effort is None or effort == "none":
        return None
    if effort not in REASONING_EFFORTS:
        raise InvalidRequestError(
            f"must be one of {', '.join(REASONING_EFFORTS)}, got {effort!r}",
            path="reasoning_effort",
        )
    return {"type": "adaptive"}


def parse_chat_request(body: Any) -> tuple[dict[str, Any], ChatOptions]:
    """``(build_request kwargs, options)`` for a ``POST /v1/chat/completions`` body."""
    if not isinstance(body, Mapping):
        raise InvalidRequestError("request body: expected a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("field required (a non-empty string)", path="model")
    if body.get("n") not in (None, 1):
        raise InvalidRequestError("only n=1 is supported", path="n")
    turns, system = _messages(body.get("messages"))
    tools = _tools(body.get("tools")) or []
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "system": system,
        "tools": tools,
        "tool_choice": _tool_choice(
            body.get("tool_choice"), tools, body.get("parallel_tool_calls")
        ),
        "output_format": _response_format(body.get("response_format")),
        "thinking": _reasoning(body.get("reasoning_effort")),
        "media_limits": OPENAI_LIMITS,
    }
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
        raise InvalidRequestError("expected a boolean", path="stream")
    if not isinstance(options, Mapping):
        raise InvalidRequestError("expected an object", path="stream_options")
    parsed.stream, parsed.include_usage = stream, bool(options.get("include_usage"))
    return kwargs, parsed


def error_response(error: StreamchatError) -> tuple[int, dict[str, Any]]:
    """``(HTTP status, body)`` in OpenAI's error shape; ``param`` names the offending field."""
    status, code = ERRORS.get(error.error_type, (None, None))
    if isinstance(error, ModelNotFoundError):
        code = "model_not_found"
    body = {"message": error.message, "type": error.error_type, "param": error.path, "code": code}
    return status or ERROR_STATUS.get(error.error_type, 500), {"error": body}


def _data(payload: dict[str, Any]) -> bytes:
    return encode_sse(None, json.dumps(payload, ensure_ascii=False, separators=(",", ":")))


def encode_error(error: StreamchatError) -> bytes:
    """``data: {"error": {...}}`` — the openai SDK raises ``APIError`` on a chunk like this."""
    return _data(error_response(error)[1])


def usage_body(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage: its ``prompt_tokens`` include what the prompt cache served (reported as
    ``prompt_tokens_details.cached_tokens``), where Anthropic's ``input_tokens`` do not."""
    read = usage.cache_read_input_tokens
    prompt = usage.input_tokens + (read or 0) + (usage.cache_creation_input_tokens or 0)
    body: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
    }
    if read is not None:
        body["prompt_tokens_details"] = {"cached_tokens": read}
    return body


def completion_id(message_id: str) -> str:
    return "chatcmpl-" + message_id.removeprefix("msg_")


def arguments_text(block: ToolUseBlock) -> str:
    """A call's ``arguments`` string; a call cut short by ``max_tokens`` keeps its raw text."""
    return block.partial_json or json.dumps(block.input, ensure_ascii=False)


class ChunkEncoder:
    """Canonical events -> ``chat.completion.chunk`` SSE frames, for one response.

    Stateful because OpenAI spreads what one Anthropic event says over several chunks: the id
    and prompt tokens arrive in ``message_start`` but the usage chunk goes out at the end, and
    tool calls are numbered among themselves (``index``), not among all content blocks.
    """

    def __init__(self, model: str, *, include_usage: bool = False, created: int | None = None):
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time()) if created is None else created
        self.id = "chatcmpl-"
        self.usage = Usage()  # from message_start, completed by message_delta
        self.calls: dict[int, int] = {}  # content block index -> tool call index

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

    def _call(self, call: dict[str, Any]) -> bytes:
        return self._chunk([self._choice({"tool_calls": [call]})])

    def encode(self, event: StreamEvent) -> bytes:
        """The bytes to send for one event (``b""`` for events OpenAI has no chunk for)."""
        kind = event.type
        if kind == "content_block_delta":
            delta = event.delta
            mapped = DELTA_FIELDS.get(delta.type)
            if mapped is not None:
                name, attribute = mapped
                return self._chunk([self._choice({name: getattr(delta, attribute)})])
            if delta.type == "input_json_delta":
                number = self.calls.get(event.index, 0)
                return self._call({"index": number, "function": {"arguments": delta.partial_json}})
            return b""  # signature_delta
        if kind == "content_block_start":
            block = event.content_block
            if block.type != "tool_use":
                return b""
            number = self.calls[event.index] = len(self.calls)
            arguments = json.dumps(block.input, ensure_ascii=False) if block.input else ""
            function = {"name": block.name, "arguments": arguments}
            return self._call(
                {"index": number, "id": block.id, "type": "function", "function": function}
            )
        if kind == "message_start":
            self.id = completion_id(event.message.id)
            self.usage = dataclasses.replace(event.message.usage)
            return self._chunk([self._choice({"role": "assistant", "content": ""})])
        if kind == "message_delta":
            merge_usage(self.usage, event.usage)
            finish = FINISH_REASONS.get(event.delta.stop_reason, "stop")
            return self._chunk([self._choice({}, finish)])
        if kind == "message_stop":
            tail = self._chunk([], usage=usage_body(self.usage)) if self.include_usage else b""
            return tail + DONE
        if kind == "error":
            return encode_error(error_from_type(event.error.type, event.error.message))
        if kind == "ping":
            return PING
        return b""  # content_block_stop


def tool_calls_body(calls: Iterable[ToolUseBlock]) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls``: the arguments as a JSON string."""
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": arguments_text(call)},
        }
        for call in calls
    ]


def completion_body(message: Message, model: str, created: int | None = None) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` response for an accumulated message: ``content``
    is null when the reply is only tool calls, thinking goes in ``reasoning_content``."""
    calls = message.tool_calls
    body: dict[str, Any] = {
        "role": "assistant",
        "content": message.text or (None if calls else ""),
        "refusal": None,
    }
    if calls:
        body["tool_calls"] = tool_calls_body(calls)
    thinking = "".join(block.thinking for block in message.content if block.type == "thinking")
    if thinking:
        body["reasoning_content"] = thinking
    return {
        "id": completion_id(message.id),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": body,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(message.stop_reason, "stop"),
            }
        ],
        "usage": usage_body(message.usage),
    }


def models_body(model_ids: Iterable[str], owned_by: str = "streamchat") -> dict[str, Any]:
    """``GET /v1/models`` in the OpenAI shape (``created`` 0: the release date is unknown)."""
    data = [{"id": m, "object": "model", "created": 0, "owned_by": owned_by} for m in model_ids]
    return {"object": "list", "data": data}
