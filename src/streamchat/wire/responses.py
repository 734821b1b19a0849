"""OpenAI Responses API codec, sans-IO: ``POST /v1/responses`` bodies in, response events out.

Requests become Anthropic-shaped :func:`build_request` arguments: ``input`` items (messages,
``function_call``, ``function_call_output``, ``reasoning``) fold into alternating turns,
``instructions`` and system/developer messages into ``system``, ``text.format`` into
``output_format``. Canonical events become the Responses stream: every canonical content block
is one output item (text -> ``message``, tool_use -> ``function_call``, thinking ->
``reasoning``), each event numbered by ``sequence_number``. Errors reuse OpenAI's error shape.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..accumulate import accumulate_event
from ..errors import InvalidRequestError, StreamchatError, error_from_type
from ..events import ContentBlock, Message, StreamEvent, Usage
from ..media import OPENAI_LIMITS, from_openai_part
from .openai import error_response
from .openai import usage_body as openai_usage_body
from .sse import encode_sse

SYSTEM_ROLES = ("system", "developer")
TEXT_PARTS = ("input_text", "output_text", "text")
MEDIA_PARTS = ("input_image", "input_file")
TOOL_CHOICES = {"auto": "auto", "none": "none", "required": "any"}
ITEM_PREFIX = {"text": "msg", "tool_use": "fc", "thinking": "rs"}
ERROR_CODES = {  # canonical error type -> the Responses ``error.code``
    "rate_limit_error": "rate_limit_exceeded",
    "overloaded_error": "rate_limit_exceeded",
    "invalid_request_error": "invalid_prompt",
}


@dataclass(slots=True)
class ResponsesOptions:
    """What the request asks of the response beyond the canonical request."""

    stream: bool = False
    store: bool = True
    background: bool = False  # generate without the client; poll, resume or cancel by id
    previous_response_id: str | None = None
    echo: dict[str, Any] = field(default_factory=dict)  # request fields the response repeats


# -- requests ----------------------------------------------------------------------------------
def _text(content: Any, where: str) -> str:
    """A message's content (a string, or text parts) as text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequestError("expected a string or a list of content parts", path=where)
    parts = []
    for i, part in enumerate(content):
        if not isinstance(part, Mapping) or part.get("type") not in TEXT_PARTS:
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise InvalidRequestError(
                f"only text content parts are supported (got {kind!r})", path=f"{where}.{i}"
            )
        if not isinstance(part.get("text"), str):
            raise InvalidRequestError("expected a string", path=f"{where}.{i}.text")
        parts.append(part["text"])
    return "".join(parts)


def _media_content(content: Any, where: str) -> list[Any] | None:
    """A user message's parts as blocks when it holds images or files (else ``None``)."""
    if not isinstance(content, list) or not any(
        isinstance(part, Mapping) and part.get("type") in MEDIA_PARTS for part in content
    ):
        return None
    blocks: list[Any] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in MEDIA_PARTS:
            blocks.append(from_openai_part(part, f"{where}.{i}"))
        elif kind in TEXT_PARTS and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
        else:
            raise InvalidRequestError("expected a text, image or file part", path=f"{where}.{i}")
    return blocks


def _string(item: Mapping[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequestError("expected a non-empty string", path=f"{where}.{name}")
    return value


def _block(item: Mapping[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """``(role, Anthropic block)`` for one non-message input item."""
    kind = item.get("type")
    if kind == "function_call":
        try:
            arguments = json.loads(item.get("arguments") or "{}")
        except ValueError:
            raise InvalidRequestError("not valid JSON", path=f"{where}.arguments") from None
        if not isinstance(arguments, dict):
            raise InvalidRequestError("expected a JSON object", path=f"{where}.arguments")
        call_id, name = _string(item, "call_id", where), _string(item, "name", where)
        return "assistant", {"type": "tool_use", "id": call_id, "name": name, "input": arguments}
    if kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else _text(output, f"{where}.output")
        call_id = _string(item, "call_id", where)
        return "user", {"type": "tool_result", "tool_use_id": call_id, "content": text}
    if kind == "reasoning":
        content = item.get("content") or []
        thinking = "".join(
            part.get("text", "") for part in content if isinstance(part, Mapping)
        ) or "".join(
            part.get("text", "") for part in item.get("summary") or [] if isinstance(part, Mapping)
        )
        signature = item.get("encrypted_content") or ""
        return "assistant", {"type": "thinking", "thinking": thinking, "signature": signature}
    raise InvalidRequestError(
        f"input items of type {kind!r} are not supported "
        "(message, function_call, function_call_output and reasoning are)",
        path=f"{where}.type",
    )


def input_messages(value: Any, where: str = "input") -> tuple[list[dict[str, Any]], list[str]]:
    """Anthropic-shaped messages and system texts from ``input`` (a string or items).

    Consecutive items of one role join one message, so a turn's function calls sit beside its
    text and their outputs form the next user turn, as Anthropic's alternation wants.
    """
    if isinstance(value, str):
        return [{"role": "user", "content": value}], []
    if not isinstance(value, list) or not value:
        raise InvalidRequestError("expected a string or a non-empty list of items", path=where)
    messages: list[dict[str, Any]] = []
    system: list[str] = []
    for i, item in enumerate(value):
        at = f"{where}.{i}"
        if not isinstance(item, Mapping):
            raise InvalidRequestError("expected an object", path=at)
        if item.get("type", "message") == "message":
            role = item.get("role")
            if role not in ("user", "assistant", *SYSTEM_ROLES):
                raise InvalidRequestError(
                    f"must be user, assistant, system or developer, got {role!r}", path=f"{at}.role"
                )
            if "content" not in item:
                raise InvalidRequestError("field required", path=f"{at}.content")
            blocks = _media_content(item["content"], f"{at}.content") if role == "user" else None
            if blocks is None:
                text = _text(item["content"], f"{at}.content")
                if role in SYSTEM_ROLES:
                    system.append(text)
                    continue
                blocks = [{"type": "text", "text": text}]
        else:
            role, block = _block(item, at)
            blocks = [block]
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    return messages, system


def _tools(tools: Any) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InvalidRequestError("expected a list of tools", path="tools")
    parsed = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, Mapping) else None
            raise InvalidRequestError(
                f"only function tools are supported, got {kind!r}", path=f"tools.{i}.type"
            )
        parsed.append(
            {
                "name": tool.get("name"),
                "description": tool.get("description") or "",
                "input_schema": tool.get("parameters") or {"type": "object", "properties": {}},
                "strict": tool.get("strict"),
            }
        )
    return parsed


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if parallel is not None and not isinstance(parallel, bool):
        raise InvalidRequestError("expected a boolean", path="parallel_tool_calls")
    disable = parallel is False
    if choice is None:
        return {"type": "auto", "disable_parallel_tool_use": True} if disable else None
    if isinstance(choice, str):
        if choice not in TOOL_CHOICES:
            raise InvalidRequestError(
                f"must be auto, none, required or a function, got {choice!r}", path="tool_choice"
            )
        return {"type": TOOL_CHOICES[choice], "disable_parallel_tool_use": disable}
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        return {"type": "tool", "name": choice.get("name"), "disable_parallel_tool_use": disable}
    raise InvalidRequestError("must be auto, none, required or a function", path="tool_choice")


def _output_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, Mapping):
        raise InvalidRequestError("expected an object", path="text")
    fmt = text.get("format")
    if fmt is None or (isinstance(fmt, Mapping) and fmt.get("type") == "text"):
        return None
    if not isinstance(fmt, Mapping) or fmt.get("type") not in ("json_object", "json_schema"):
        raise InvalidRequestError(
            "must be text, json_object or json_schema", path="text.format.type"
        )
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    if "schema" not in fmt:
        raise InvalidRequestError("field required", path="text.format.schema")
    return {
        "type": "json_schema",
        "schema": fmt["schema"],
        "name": fmt.get("name"),
        "strict": fmt.get("strict"),
    }


def parse_responses_request(
    body: Any, history: list[dict[str, Any]] | None = None
) -> tuple[dict[str, Any], ResponsesOptions]:
    """``(build_request kwargs, options)`` for a ``POST /v1/responses`` body; ``history`` is the
    stored conversation that ``previous_response_id`` continues (Anthropic-shaped messages)."""
    if not isinstance(body, Mapping):
        raise InvalidRequestError("request body: expected a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("field required (a non-empty string)", path="model")
    if "input" not in body:
        raise InvalidRequestError("field required", path="input")
    messages, system = input_messages(body["input"])
    if history:
        messages = [*history, *messages]
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise InvalidRequestError("expected a string", path="instructions")
        system.insert(0, instructions)
    kwargs: dict[str, Any] = {"model": model, "messages": messages, "media_limits": OPENAI_LIMITS}
    if system:
        kwargs["system"] = "\n\n".join(system)
    if body.get("max_output_tokens") is not None:
        kwargs["max_tokens"] = body["max_output_tokens"]
    kwargs.update({k: body[k] for k in ("temperature", "top_p") if body.get(k) is not None})
    tools = _tools(body.get("tools"))
    if tools:
        kwargs["tools"] = tools
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None and (tools or choice["type"] != "auto"):
        kwargs["tool_choice"] = choice
    output_format = _output_format(body.get("text"))
    if output_format is not None:
        kwargs["output_format"] = output_format
    options = ResponsesOptions()
    for name in ("stream", "store", "background"):
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            raise InvalidRequestError("expected a boolean", path=name)
    options.stream = bool(body.get("stream"))
    options.store = body.get("store") is not False
    options.background = bool(body.get("background"))
    if options.background and not options.store:
        raise InvalidRequestError("background mode requires store: true", path="background")
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise InvalidRequestError("expected a string", path="previous_response_id")
    options.previous_response_id = previous
    options.echo = {
        "instructions": instructions,
        "max_output_tokens": body.get("max_output_tokens"),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "tools": body.get("tools") or [],
        "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "text": body.get("text") or {"format": {"type": "text"}},
        "metadata": body.get("metadata") or {},
        "previous_response_id": previous,
        "store": options.store,
        "background": options.background,
    }
    return kwargs, options


# -- responses ---------------------------------------------------------------------------------
def response_id(message_id: str) -> str:
    return "resp_" + message_id.removeprefix("msg_")


def usage_body(usage: Usage) -> dict[str, Any]:
    """OpenAI's Responses usage: ``input_tokens`` include what the prompt cache served (the
    same total as Chat Completions' ``prompt_tokens``), reported as ``cached_tokens``."""
    chat = openai_usage_body(usage)
    return {
        "input_tokens": chat["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": usage.cache_read_input_tokens or 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": chat["total_tokens"],
    }


def output_item(block: ContentBlock, item_id: str, status: str) -> dict[str, Any]:
    """One canonical content block as a Responses output item."""
    if block.type == "tool_use":
        arguments = block.partial_json or json.dumps(block.input, ensure_ascii=False)
        return {
            "type": "function_call",
            "id": item_id,
            "call_id": block.id,
            "name": block.name,
            "arguments": arguments,
            "status": status,
        }
    if block.type == "thinking":
        return {
            "type": "reasoning",
            "id": item_id,
            "summary": [],
            "content": [{"type": "reasoning_text", "text": block.thinking}],
            "encrypted_content": block.signature or None,
            "status": status,
        }
    part = {"type": "output_text", "text": block.text, "annotations": [], "logprobs": []}
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": status,
        "content": [part] if status != "in_progress" else [],
    }


def output_item_id(message: Message, index: int) -> str:
    """The stable id of a message's output item (``msg_…``, ``fc_…``, ``rs_…`` + message id)."""
    kind = message.content[index].type
    return f"{ITEM_PREFIX[kind]}_{message.id.removeprefix('msg_')}_{index}"


def response_body(
    message: Message | None,
    *,
    model: str,
    echo: dict[str, Any],
    created: int,
    status: str,
    error: dict[str, Any] | None = None,
    item_status: str = "completed",
) -> dict[str, Any]:
    """The ``response`` object, from the message so far (``None`` before it started)."""
    output: list[dict[str, Any]] = []
    usage = None
    if message is not None:
        output = [
            output_item(block, output_item_id(message, i), item_status)
            for i, block in enumerate(message.content)
        ]
        usage = usage_body(message.usage)
    incomplete = (
        {"reason": "max_output_tokens"}
        if message is not None and message.stop_reason == "max_tokens"
        else None
    )
    return {
        "id": response_id(message.id) if message is not None else "resp_",
        "object": "response",
        "created_at": created,
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "model": model,
        "output": output,
        "usage": usage,
        **echo,
    }


def final_body(message: Message, model: str, echo: dict[str, Any], created: int) -> dict[str, Any]:
    """The non-streaming response for a finished message."""
    status = "incomplete" if message.stop_reason == "max_tokens" else "completed"
    return response_body(
        message,
        model=model,
        echo=echo,
        created=created,
        status=status,
        item_status="incomplete" if status == "incomplete" else "completed",
    )


def _frame(payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return encode_sse(payload["type"], data)


class ResponseStreamEncoder:
    """Canonical events -> Responses SSE events, for one response.

    Keeps the accumulated message (the ``response`` objects repeat it) and numbers every event.
    """

    def __init__(self, model: str, echo: dict[str, Any], created: int | None = None) -> None:
        self.model = model
        self.echo = echo
        self.created = int(time.time()) if created is None else created
        self.message: Message | None = None
        self.response: dict[str, Any] | None = None  # the last ``response`` object sent
        self.sequence = 0

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return _frame(payload)

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        self.response = self.snapshot(status, **extra)
        return self.response

    def snapshot(self, status: str, **extra: Any) -> dict[str, Any]:
        """The ``response`` object of the message so far, with ``status``."""
        return response_body(
            self.message,
            model=self.model,
            echo=self.echo,
            created=self.created,
            status=status,
            **extra,
        )

    def _item_id(self, index: int) -> str:
        assert self.message is not None
        return output_item_id(self.message, index)

    def encode(self, event: StreamEvent) -> bytes:
        kind = event.type
        if kind == "error":
            error = error_from_type(event.error.type, event.error.message)
            return self.encode_error(error)
        if kind == "ping":
            return b""
        self.message = accumulate_event(self.message, event)
        message = self.message
        if kind == "content_block_delta":
            index, delta, item_id = event.index, event.delta, self._item_id(event.index)
            where = {"item_id": item_id, "output_index": index}
            if delta.type == "text_delta":
                return self._event(
                    "response.output_text.delta",
                    **where,
                    content_index=0,
                    delta=delta.text,
                    logprobs=[],
                )
            if delta.type == "input_json_delta":
                return self._event(
                    "response.function_call_arguments.delta", **where, delta=delta.partial_json
                )
            if delta.type == "thinking_delta":
                return self._event(
                    "response.reasoning_text.delta", **where, content_index=0, delta=delta.thinking
                )
            return b""  # a signature travels in the item's encrypted_content
        if kind == "message_start":
            return self._event("response.created", response=self._response("in_progress")) + (
                self._event("response.in_progress", response=self._response("in_progress"))
            )
        if kind == "content_block_start":
            index = event.index
            block = message.content[index]
            item_id = self._item_id(index)
            added = self._event(
                "response.output_item.added",
                output_index=index,
                item=output_item(block, item_id, "in_progress"),
            )
            if block.type != "text":
                return added
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            return added + self._event(
                "response.content_part.added",
                item_id=item_id,
                output_index=index,
                content_index=0,
                part=part,
            )
        if kind == "content_block_stop":
            return self._close_item(event.index, "completed")
        if kind == "message_stop":
            if message.stop_reason == "max_tokens":
                return self._event(
                    "response.incomplete",
                    response=self._response("incomplete", item_status="incomplete"),
                )
            return self._event("response.completed", response=self._response("completed"))
        return b""  # message_delta: its stop reason and usage go out with the final response

    def _close_item(self, index: int, status: str) -> bytes:
        assert self.message is not None
        block = self.message.content[index]
        item_id = self._item_id(index)
        where = {"item_id": item_id, "output_index": index}
        if block.type == "text":
            part = {"type": "output_text", "text": block.text, "annotations": [], "logprobs": []}
            frames = self._event(
                "response.output_text.done", **where, content_index=0, text=block.text, logprobs=[]
            ) + self._event("response.content_part.done", **where, content_index=0, part=part)
        elif block.type == "tool_use":
            arguments = block.partial_json or json.dumps(block.input, ensure_ascii=False)
            frames = self._event(
                "response.function_call_arguments.done", **where, arguments=arguments
            )
        else:
            frames = self._event(
                "response.reasoning_text.done", **where, content_index=0, text=block.thinking
            )
        item = output_item(block, item_id, status)
        return frames + self._event("response.output_item.done", output_index=index, item=item)

    def encode_error(self, error: StreamchatError) -> bytes:
        """``response.failed`` with the error, after the stream began (the stream's encoder)."""
        _, body = error_response(error)
        code = ERROR_CODES.get(error.error_type, "server_error")
        failure = {"code": code, "message": body["error"]["message"]}
        return self._event("response.failed", response=self._response("failed", error=failure))


def error_event(error: StreamchatError, sequence_number: int) -> bytes:
    """The stream's ``error`` event (a stream resumed without its encoder: the SDK raises)."""
    code = ERROR_CODES.get(error.error_type, "server_error")
    payload = {"type": "error", "code": code, "message": error.message, "param": None,
               "sequence_number": sequence_number}  # fmt: skip
    return _frame(payload)
