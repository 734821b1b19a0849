"""Bedrock Runtime on the wire, sans-IO: request bodies in, eventstream frames and JSON out.

Every Bedrock name lives here as data: Converse field names, Converse stream event names,
error codes and statuses. Shapes follow botocore's service model
(``botocore/data/bedrock-runtime/2023-09-30/service-2.json``), the judge of what boto3 accepts.
Two APIs share it: Converse (Bedrock's own shape) and invoke (the Anthropic Messages shape with
``anthropic_version``, used by ``anthropic.AnthropicBedrock``). This is the server's side; the
``bedrock/`` provider's requests upstream are :mod:`.bedrock_upstream`, which reads its Converse
names (blocks, tool choices) from the tables here, so that each is written once.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..accumulate import merge_usage
from ..errors import InvalidRequestError, field_name
from ..events import Message, StreamEvent, Usage
from ..media import BEDROCK_LIMITS, MediaBlock, MediaKind, from_converse, to_converse
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

# canonical request field -> the Converse field a validation error should name ("#" stands for
# an index, mapped back to the body's own position: cache points are dropped before validation)
CONVERSE_FIELDS: dict[str, str] = {
    "max_tokens": "inferenceConfig.maxTokens",
    "temperature": "inferenceConfig.temperature",
    "top_p": "inferenceConfig.topP",
    "stop_sequences": "inferenceConfig.stopSequences",
    "top_k": "additionalModelRequestFields.top_k",
    "thinking": "additionalModelRequestFields.thinking",
    "thinking.type": "additionalModelRequestFields.thinking.type",
    "thinking.budget_tokens": "additionalModelRequestFields.thinking.budget_tokens",
    "tools": "toolConfig.tools",
    "tools.#": "toolConfig.tools.#",
    "tools.#.name": "toolConfig.tools.#.toolSpec.name",
    "tools.#.description": "toolConfig.tools.#.toolSpec.description",
    "tools.#.input_schema": "toolConfig.tools.#.toolSpec.inputSchema.json",
    "tool_choice": "toolConfig.toolChoice",
    "tool_choice.type": "toolConfig.toolChoice",
    "tool_choice.name": "toolConfig.toolChoice.tool.name",
    "output_format": "outputConfig.textFormat",
    "output_format.schema": "outputConfig.textFormat.structure.jsonSchema.schema",
    "messages.#.content.#": "messages.#.content.#",
    "messages.#.content.#.id": "messages.#.content.#.toolUse.toolUseId",
    "messages.#.content.#.name": "messages.#.content.#.toolUse.name",
    "messages.#.content.#.input": "messages.#.content.#.toolUse.input",
    "messages.#.content.#.tool_use_id": "messages.#.content.#.toolResult.toolUseId",
    "messages.#.content.#.content": "messages.#.content.#.toolResult.content",
    "messages.#.content.#.content.#": "messages.#.content.#.toolResult.content.#",
    "messages.#.content.#.content.#.text": "messages.#.content.#.toolResult.content.#.text",
    "messages.#.content.#.thinking": "messages.#.content.#.reasoningContent.reasoningText.text",
}
_INFERENCE_CONFIG = {
    v.rpartition(".")[2]: k for k, v in CONVERSE_FIELDS.items() if v.startswith("inferenceConfig.")
}
_IGNORED_BLOCKS = {"cachePoint"}  # prompt-cache markers carry no text
# toolConfig.toolChoice member -> the Anthropic-shaped tool_choice
TOOL_CHOICES: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "auto": lambda value: {"type": "auto"},
    "any": lambda value: {"type": "any"},
    "tool": lambda value: {"type": "tool", "name": value.get("name")},
}
TOOL_RESULT_STATUS = {"success": False, "error": True}  # status -> is_error
# toolResult content member -> the Anthropic-shaped part
TOOL_RESULT_PARTS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "text": lambda value: {"type": "text", "text": value},
    "json": lambda value: {"type": "json", "json": value},
}


# -- requests ----------------------------------------------------------------------------------
def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidRequestError("expected an object", path=where)
    return value


def _blocks_text(blocks: Any, where: str, separator: str = "") -> str:
    """Converse content blocks (``[{"text": ...}]``) to text; other block kinds are refused."""
    if not isinstance(blocks, list):
        raise InvalidRequestError("expected a list of content blocks", path=where)
    parts = []
    for i, block in enumerate(blocks):
        kinds = list(_object(block, f"{where}.{i}"))
        if kinds == ["text"]:
            if not isinstance(block["text"], str):
                raise InvalidRequestError("expected a string", path=f"{where}.{i}.text")
            parts.append(block["text"])
        elif not kinds or not set(kinds) <= _IGNORED_BLOCKS:
            raise InvalidRequestError(
                f"only text content blocks are supported (got {', '.join(kinds)})",
                path=f"{where}.{i}",
            )
    return separator.join(parts)


def _tool_use(value: Any, where: str) -> dict[str, Any]:
    value = _object(value, f"{where}.toolUse")
    if "input" not in value:
        raise InvalidRequestError("field required", path=f"{where}.toolUse.input")
    return {
        "type": "tool_use",
        "id": value.get("toolUseId"),
        "name": value.get("name"),
        "input": value["input"],
    }


def _tool_result(value: Any, where: str) -> dict[str, Any]:
    value = _object(value, f"{where}.toolResult")
    status = value.get("status", "success")
    if not isinstance(status, str) or status not in TOOL_RESULT_STATUS:
        raise InvalidRequestError(
            f"must be 'success' or 'error', got {status!r}", path=f"{where}.toolResult.status"
        )
    content = value.get("content")
    if not isinstance(content, list):
        raise InvalidRequestError(
            "expected a list of content blocks", path=f"{where}.toolResult.content"
        )
    parts: list[Any] = []
    for k, part in enumerate(content):
        at = f"{where}.toolResult.content.{k}"
        kinds = list(_object(part, at))
        if len(kinds) == 1 and kinds[0] in ("image", "document", "video"):
            parts.append(from_converse(kinds[0], part[kinds[0]], at))
            continue
        if len(kinds) != 1 or kinds[0] not in TOOL_RESULT_PARTS:
            raise InvalidRequestError(
                "a tool result holds text, json, image, document and video content "
                f"(got {', '.join(kinds) or 'nothing'})",
                path=at,
            )
        parts.append(TOOL_RESULT_PARTS[kinds[0]](part[kinds[0]]))
    return {
        "type": "tool_result",
        "tool_use_id": value.get("toolUseId"),
        "content": parts,
        "is_error": TOOL_RESULT_STATUS[status],
    }


def _reasoning(value: Any, where: str) -> dict[str, Any]:
    """Reasoning in assistant history, kept with its signature (Claude checks it upstream);
    encrypted reasoning carries nothing a model here can read."""
    value = _object(value, f"{where}.reasoningContent")
    if "redactedContent" in value:
        return {"type": "redacted_thinking"}
    text = _object(value.get("reasoningText"), f"{where}.reasoningContent.reasoningText")
    signature = text.get("signature") or ""
    if not isinstance(signature, str):
        raise InvalidRequestError(
            "expected a string", path=f"{where}.reasoningContent.reasoningText.signature"
        )
    return {"type": "thinking", "thinking": text.get("text"), "signature": signature}


def _text(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, str):
        raise InvalidRequestError("expected a string", path=f"{where}.text")
    return {"type": "text", "text": value}


def _media(kind: MediaKind) -> Callable[[Any, str], MediaBlock]:
    return lambda value, where: from_converse(kind, value, where)


# Converse content block member -> (the role it belongs to, the Anthropic-shaped block, or the
# canonical one for images, documents and videos)
CONTENT_BLOCKS: dict[str, tuple[str | None, Callable[[Any, str], Any]]] = {
    "text": (None, _text),
    "image": ("user", _media("image")),
    "document": ("user", _media("document")),
    "video": ("user", _media("video")),
    "toolUse": ("assistant", _tool_use),
    "toolResult": ("user", _tool_result),
    "reasoningContent": ("assistant", _reasoning),
}


def _message_content(
    blocks: Any, role: Any, where: str
) -> tuple[str | list[dict[str, Any]], list[int]]:
    """A message's blocks for build_request (plain text when that is all there is) and the
    body position of each block kept."""
    if not isinstance(blocks, list):
        raise InvalidRequestError("expected a list of content blocks", path=where)
    kept: list[Any] = []
    positions: list[int] = []
    for j, block in enumerate(blocks):
        kinds = list(_object(block, f"{where}.{j}"))
        if kinds and set(kinds) <= _IGNORED_BLOCKS:
            continue
        if len(kinds) != 1 or kinds[0] not in CONTENT_BLOCKS:
            raise InvalidRequestError(
                f"content blocks of type {', '.join(kinds) or 'nothing'} are not "
                f"supported ({', '.join(CONTENT_BLOCKS)} are)",
                path=f"{where}.{j}",
            )
        owner, convert = CONTENT_BLOCKS[kinds[0]]
        if owner is not None and role != owner:
            raise InvalidRequestError(
                f"{kinds[0]} blocks belong in {owner} messages", path=f"{where}.{j}"
            )
        kept.append(convert(block[kinds[0]], f"{where}.{j}"))
        positions.append(j)
    if all(isinstance(block, dict) and block["type"] == "text" for block in kept):
        return "".join(block["text"] for block in kept), positions
    return kept, positions


def _tool_config(config: Any, kwargs: dict[str, Any], positions: dict[str, list[int]]) -> None:
    """``toolConfig`` -> Anthropic-shaped ``tools`` and ``tool_choice``."""
    config = _object(config, "toolConfig")
    tools = config.get("tools")
    if not isinstance(tools, list) or not tools:
        raise InvalidRequestError("at least one tool is required", path="toolConfig.tools")
    kwargs["tools"], positions["tools"] = [], []
    for i, tool in enumerate(tools):
        kinds = list(_object(tool, f"toolConfig.tools.{i}"))
        if kinds == ["cachePoint"]:
            continue
        if kinds != ["toolSpec"]:
            raise InvalidRequestError(
                f"only toolSpec tools are supported (got {', '.join(kinds) or 'nothing'})",
                path=f"toolConfig.tools.{i}",
            )
        spec = _object(tool["toolSpec"], f"toolConfig.tools.{i}.toolSpec")
        schema = _object(spec.get("inputSchema"), f"toolConfig.tools.{i}.toolSpec.inputSchema")
        if "json" not in schema:
            raise InvalidRequestError(
                "required", path=f"toolConfig.tools.{i}.toolSpec.inputSchema.json"
            )
        kwargs["tools"].append(
            {
                "name": spec.get("name"),
                "description": spec.get("description") or "",
                "input_schema": schema["json"],
            }
        )
        positions["tools"].append(i)
    choice = config.get("toolChoice")
    if choice is not None:
        kinds = list(_object(choice, "toolConfig.toolChoice"))
        if len(kinds) != 1 or kinds[0] not in TOOL_CHOICES:
            raise InvalidRequestError(
                f"exactly one of {', '.join(TOOL_CHOICES)} is required",
                path="toolConfig.toolChoice",
            )
        value = _object(choice[kinds[0]], f"toolConfig.toolChoice.{kinds[0]}")
        kwargs["tool_choice"] = TOOL_CHOICES[kinds[0]](value)


def _output_format(config: Any) -> dict[str, Any] | None:
    """``outputConfig.textFormat`` (a JSON Schema sent as a string) -> ``output_format``."""
    config = _object(config, "outputConfig")
    if config.get("textFormat") is None:
        return None
    where = "outputConfig.textFormat"
    text_format = _object(config["textFormat"], where)
    if text_format.get("type") != "json_schema":
        raise InvalidRequestError("must be 'json_schema'", path=f"{where}.type")
    structure = _object(text_format.get("structure"), f"{where}.structure")
    definition = _object(structure.get("jsonSchema"), f"{where}.structure.jsonSchema")
    schema = definition.get("schema")
    try:
        parsed = json.loads(schema) if isinstance(schema, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise InvalidRequestError(
            "expected a JSON text", path=f"{where}.structure.jsonSchema.schema"
        )
    return {"type": "json_schema", "schema": parsed, "name": definition.get("name")}


def _converse_kwargs(
    body: Any, default_max_tokens: int
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """build_request kwargs and, per list, the body position of each element kept."""
    body = _object(body, "request body")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("at least one message is required", path="messages")
    turns = []
    positions: dict[str, list[int]] = {}
    for i, message in enumerate(messages):
        message = _object(message, f"messages.{i}")
        content = message.get("content")
        if not content:
            raise InvalidRequestError(
                "at least one content block is required", path=f"messages.{i}.content"
            )
        role = message.get("role")
        if role not in ("user", "assistant"):  # Converse has no system-role messages
            raise InvalidRequestError(
                f"must be 'user' or 'assistant', got {role!r}", path=f"messages.{i}.role"
            )
        text, positions[f"messages.{i}.content"] = _message_content(
            content, role, f"messages.{i}.content"
        )
        turns.append({"role": role, "content": text})
    kwargs: dict[str, Any] = {"messages": turns, "max_tokens": default_max_tokens}
    if body.get("system"):
        kwargs["system"] = _blocks_text(body["system"], "system", "\n")
    config = _object(body.get("inferenceConfig") or {}, "inferenceConfig")
    kwargs.update({_INFERENCE_CONFIG[k]: v for k, v in config.items() if k in _INFERENCE_CONFIG})
    extra = _object(body.get("additionalModelRequestFields") or {}, "additionalModelRequestFields")
    for name in ("top_k", "thinking"):  # Claude's own fields, as Bedrock passes them on
        if name in extra:
            kwargs[name] = extra[name]
    if body.get("toolConfig") is not None:
        _tool_config(body["toolConfig"], kwargs, positions)
    if body.get("outputConfig") is not None:
        output_format = _output_format(body["outputConfig"])
        if output_format is not None:
            kwargs["output_format"] = output_format
    return kwargs, positions


def converse_kwargs(body: Any, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, Any]:
    """A Converse request body -> keyword arguments for :func:`build_request` (minus model)."""
    return _converse_kwargs(body, default_max_tokens)[0]


def converse_field(field: str, positions: Mapping[str, list[int]]) -> str | None:
    """The Converse name of a canonical field (``tools.0.name`` ->
    ``toolConfig.tools.0.toolSpec.name``), or ``None`` when it has none."""
    segments = field.split(".")
    # map each index back to the body's position: tools.N, messages.I.content.J
    if segments[0] == "tools" and len(segments) > 1 and segments[1].isdigit():
        segments[1] = str(_kept(positions.get("tools", []), int(segments[1])))
    elif segments[0] == "messages" and len(segments) > 3 and segments[3].isdigit():
        kept = positions.get(f"messages.{segments[1]}.content", [])
        segments[3] = str(_kept(kept, int(segments[3])))
    return field_name(".".join(segments), CONVERSE_FIELDS, parents=False)


def _kept(positions: list[int], index: int) -> int:
    """The body's position of the ``index``-th item validation saw."""
    return positions[index] if index < len(positions) else index


def build_converse_request(body: Any, *, model: str, max_tokens_limit: int) -> MessageRequest:
    """Validate a Converse body; errors name the Converse field (``inferenceConfig.maxTokens``,
    ``toolConfig.toolChoice.tool.name``)."""
    kwargs, positions = _converse_kwargs(body, min(DEFAULT_MAX_TOKENS, max_tokens_limit))
    try:
        return build_request(
            model=model, max_tokens_limit=max_tokens_limit, media_limits=BEDROCK_LIMITS, **kwargs
        )
    except InvalidRequestError as error:
        renamed = converse_field(error.path, positions) if error.path is not None else None
        if renamed is not None:
            raise InvalidRequestError(error.detail, path=renamed) from None
        raise


def build_invoke_request(body: Any, *, model: str, max_tokens_limit: int) -> MessageRequest:
    """An invoke body: Anthropic Messages + ``anthropic_version``, the model from the path."""
    body = _object(body, "request body")
    if "anthropic_version" not in body:
        raise InvalidRequestError("field required", path="anthropic_version")
    kwargs, _ = parse_messages_request({**body, "model": model, "stream": False})
    return build_request(**kwargs, max_tokens_limit=max_tokens_limit)


def build_count_tokens_request(body: Any, *, model: str, max_tokens_limit: int) -> MessageRequest:
    """``CountTokens``: ``input`` holds either a Converse request (``converse``: messages,
    system, toolConfig) or an InvokeModel body (``invokeModel.body``, base64 in JSON)."""
    body = _object(body, "request body")
    given = _object(body.get("input"), "input")
    forms = [name for name in ("converse", "invokeModel") if given.get(name) is not None]
    if len(forms) != 1:
        raise InvalidRequestError(
            "exactly one of converse or invokeModel is required", path="input"
        )
    if forms == ["converse"]:
        converse = _object(given["converse"], "input.converse")
        return build_converse_request(converse, model=model, max_tokens_limit=max_tokens_limit)
    invoke = _object(given["invokeModel"], "input.invokeModel")
    raw = invoke.get("body")
    if not isinstance(raw, str):
        raise InvalidRequestError("field required (base64 JSON)", path="input.invokeModel.body")
    try:
        decoded = json.loads(base64.b64decode(raw, validate=True))
    except (ValueError, binascii.Error):
        raise InvalidRequestError(
            "not base64-encoded JSON", path="input.invokeModel.body"
        ) from None
    decoded = dict(_object(decoded, "input.invokeModel.body"))
    decoded.setdefault("max_tokens", min(DEFAULT_MAX_TOKENS, max_tokens_limit))
    return build_invoke_request(decoded, model=model, max_tokens_limit=max_tokens_limit)


def count_tokens_body(input_tokens: int) -> dict[str, int]:
    return {"inputTokens": input_tokens}


# -- responses ---------------------------------------------------------------------------------
def _usage(usage: Usage) -> dict[str, int]:
    """TokenUsage; the prompt-cache members only where the backend has a cache. As in the
    canonical (Anthropic) usage, ``inputTokens`` excludes what the cache read or wrote."""
    read, written = usage.cache_read_input_tokens, usage.cache_creation_input_tokens
    total = usage.input_tokens + usage.output_tokens + (read or 0) + (written or 0)
    body = {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "totalTokens": total,
    }
    if read is not None:
        body["cacheReadInputTokens"] = read
    if written is not None:
        body["cacheWriteInputTokens"] = written
    return body


def _millis(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _reasoning_text(block: Any) -> dict[str, Any]:
    text = {"text": block.thinking}
    if block.signature:  # Claude checks it when the conversation goes back upstream
        text["signature"] = block.signature
    return {"reasoningContent": {"reasoningText": text}}


def _tool_result_block(block: Any) -> dict[str, Any]:
    content = [
        {"text": p}
        if isinstance(p, str)
        else to_converse(p)
        if isinstance(p, MediaBlock)
        else {"json": p}
        for p in block.content
    ]
    status = "error" if block.is_error else "success"
    return {"toolResult": {"toolUseId": block.tool_use_id, "content": content, "status": status}}


# canonical block type -> its Converse ContentBlock (answers, and requests to an upstream)
CONVERSE_BLOCKS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "text": lambda b: {"text": b.text},
    "tool_use": lambda b: {"toolUse": {"toolUseId": b.id, "name": b.name, "input": b.input}},
    "tool_result": _tool_result_block,
    "thinking": _reasoning_text,
    "image": to_converse,
    "document": to_converse,
    "video": to_converse,
}


def converse_response(message: Message, latency: float) -> dict[str, Any]:
    """The Converse JSON for a finished message (``latency`` in seconds)."""
    content = [CONVERSE_BLOCKS[block.type](block) for block in message.content] or [{"text": ""}]
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": message.stop_reason or "end_turn",
        "usage": _usage(message.usage),
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
    usage: Usage = dataclasses.field(default_factory=Usage)

    def see(self, event: StreamEvent) -> None:
        if self.first is None:
            self.first = event.timestamp
        if event.type == "message_start":
            self.usage = dataclasses.replace(event.message.usage)
        elif event.type == "message_delta":
            merge_usage(self.usage, event.usage)


# canonical delta type -> ContentBlockDelta member
CONVERSE_DELTAS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "text_delta": lambda d: {"text": d.text},
    "input_json_delta": lambda d: {"toolUse": {"input": d.partial_json}},
    "thinking_delta": lambda d: {"reasoningContent": {"text": d.thinking}},
    "signature_delta": lambda d: {"reasoningContent": {"signature": d.signature}},
}
# canonical block type -> ContentBlockStart member; text and reasoning blocks have none (their
# first delta opens them), so only a tool call sends contentBlockStart.
CONVERSE_STARTS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "tool_use": lambda b: {"toolUse": {"toolUseId": b.id, "name": b.name}},
}


def _block_start(event: Any, tally: _Tally) -> dict[str, Any] | None:
    start = CONVERSE_STARTS.get(event.content_block.type)
    if start is None:
        return None
    return {"contentBlockIndex": event.index, "start": start(event.content_block)}


# canonical event type -> (Converse stream event, payload or None for nothing to send);
# Converse has no pings.
CONVERSE_EVENTS: dict[str, tuple[str, Callable[[Any, _Tally], dict[str, Any] | None]]] = {
    "message_start": ("messageStart", lambda e, t: {"role": e.message.role}),
    "content_block_start": ("contentBlockStart", _block_start),
    "content_block_delta": (
        "contentBlockDelta",
        lambda e, t: {
            "contentBlockIndex": e.index,
            "delta": CONVERSE_DELTAS[e.delta.type](e.delta),
        },
    ),
    "content_block_stop": ("contentBlockStop", lambda e, t: {"contentBlockIndex": e.index}),
    "message_delta": (
        "messageStop",
        lambda e, t: {"stopReason": e.delta.stop_reason or "end_turn"},
    ),
    "message_stop": (
        "metadata",
        lambda e, t: {
            "usage": _usage(t.usage),
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
        data = payload(event, self.tally)
        return b"" if data is None else event_message(name, data)


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
                "inputTokenCount": tally.usage.input_tokens,
                "outputTokenCount": tally.usage.output_tokens,
                "invocationLatency": _millis(event.timestamp - tally.started),
                "firstByteLatency": _millis((tally.first or event.timestamp) - tally.started),
            }
        raw = json.dumps(data, ensure_ascii=False).encode()
        return event_message("chunk", {"bytes": base64.b64encode(raw).decode("ascii")})
