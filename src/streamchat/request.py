"""The canonical request every provider receives, and the one place requests are validated.

Content may be a plain string, a list of Anthropic blocks (``text``, ``image``, ``document``,
``tool_use``, ``tool_result``, ``thinking``) or Bedrock text blocks (``{"text": ...}``). Wire
codecs translate their protocol to these Anthropic-shaped arguments (or to canonical block objects)
and let this module validate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import InvalidRequestError
from .events import TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from .media import (
    ANTHROPIC_LIMITS,
    MEDIA_KINDS,
    MediaBlock,
    MediaLimits,
    from_anthropic,
    from_converse,
)

Role = Literal["user", "assistant"]
# The largest max_tokens any current Claude model accepts (128k output); a provider clamps it to
# what its model can produce (the context left after the prompt) and stops with max_tokens.
MAX_TOKENS_LIMIT = 128_000
MAX_STOP_SEQUENCES = 16
MAX_TOOLS = 128
MAX_SCHEMA_BYTES = 64 * 1024  # one tool's input schema (or the JSON output schema), serialised
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOOL_CHOICES = ("auto", "any", "tool", "none")
THINKING_TYPES = ("enabled", "disabled", "adaptive", "between_tools")
SYSTEM_LABEL = "System: "  # how a system message inside the conversation reads in a user turn
MIN_THINKING_BUDGET = 1024

RequestBlock = TextBlock | ToolUseBlock | ThinkingBlock | ToolResultBlock | MediaBlock


@dataclass(slots=True, frozen=True)
class Turn:
    """One message of the conversation. ``content`` is its text; ``blocks`` holds every block in
    order (text, images and documents, tool calls, tool results, thinking) when the turn has more
    than text."""

    role: Role
    content: str
    blocks: tuple[RequestBlock, ...] = ()

    @property
    def parts(self) -> tuple[RequestBlock, ...]:
        return self.blocks or (TextBlock(self.content),)


@dataclass(slots=True, frozen=True)
class Tool:
    name: str
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    strict: bool = False  # only what the grammar enforces (a 400 names anything else)


@dataclass(slots=True, frozen=True)
class ToolChoice:
    """``auto`` (the model decides), ``any`` (some tool), ``tool`` (``name``), ``none``."""

    type: Literal["auto", "any", "tool", "none"] = "auto"
    name: str | None = None
    disable_parallel_tool_use: bool = False


@dataclass(slots=True, frozen=True)
class ThinkingConfig:
    type: Literal["enabled", "disabled", "adaptive", "between_tools"] = "enabled"
    budget_tokens: int | None = None


@dataclass(slots=True, frozen=True)
class OutputFormat:
    """JSON output: valid against ``schema``, or any JSON object when it is ``None``."""

    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool = False  # as Tool.strict


@dataclass(slots=True)
class MessageRequest:
    """What a provider is asked to do; built by :func:`build_request`."""

    model: str
    messages: list[Turn]
    max_tokens: int = 1024
    system: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] = field(default_factory=list)
    seed: int | None = None
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    thinking: ThinkingConfig | None = None
    output_format: OutputFormat | None = None

    @property
    def wants_tools(self) -> bool:
        """Whether the reply may (or must) call a tool."""
        return bool(self.tools) and self.tool_choice.type != "none"

    def tool(self, name: str) -> Tool | None:
        return next((tool for tool in self.tools if tool.name == name), None)


def prompt_too_long(tokens: int, window: int) -> InvalidRequestError:
    """The Anthropic API's own refusal of a prompt longer than the model's context window (its
    words, which agents match on, after the field name every error here starts with)."""
    return InvalidRequestError(
        f"prompt is too long: {tokens} tokens > {window} maximum (the model's context window)",
        path="messages",
    )


def content_text(content: Any, where: str) -> str:
    """Flatten message content (string or text blocks) to text; ``where`` names the field."""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        content = [content]
    if not isinstance(content, Iterable):
        raise InvalidRequestError("expected a string or a list of content blocks", path=where)
    parts: list[str] = []
    for i, block in enumerate(content):
        if isinstance(block, str):
            parts.append(block)
            continue
        if not isinstance(block, Mapping):
            raise InvalidRequestError("expected a content block object", path=f"{where}.{i}")
        kind = block.get("type", "text")
        if kind != "text" or not isinstance(block.get("text"), str):
            raise InvalidRequestError(
                f"only text content blocks are supported (got type {kind!r})", path=f"{where}.{i}"
            )
        parts.append(block["text"])
    return "".join(parts)


def _number(value: Any, name: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError("expected a number", path=name)
    if not low <= value <= high:
        raise InvalidRequestError(f"must be between {low:g} and {high:g}, got {value}", path=name)
    return float(value)


def _text_field(block: Mapping[str, Any], name: str, where: str) -> str:
    value = block.get(name)
    if not isinstance(value, str):
        raise InvalidRequestError("expected a string", path=f"{where}.{name}")
    return value


def _tool_result_content(content: Any, where: str, limits: MediaLimits) -> list[Any]:
    """A tool result's content: a string, or text, image and document blocks (Bedrock's JSON
    parts pass as values)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise InvalidRequestError("expected a string or a list of content blocks", path=where)
    parts: list[Any] = []
    for i, part in enumerate(content):
        if isinstance(part, MediaBlock):
            parts.append(_media(part, f"{where}.{i}", limits))
            continue
        if not isinstance(part, Mapping):
            raise InvalidRequestError("expected a content block object", path=f"{where}.{i}")
        kind = part.get("type", "text")
        if kind == "text":
            parts.append(_text_field(part, "text", f"{where}.{i}"))
        elif kind == "json" and "json" in part:
            parts.append(part["json"])
        elif kind in MEDIA_KINDS:
            parts.append(_media(part, f"{where}.{i}", limits))
        else:
            raise InvalidRequestError(
                f"a tool result holds text, images and documents (got {kind!r})",
                path=f"{where}.{i}",
            )
    return parts


def _media(block: Mapping[str, Any] | MediaBlock, where: str, limits: MediaLimits) -> MediaBlock:
    """An image, document or video (already decoded, Anthropic's or Bedrock's), in limits."""
    if isinstance(block, MediaBlock):
        media = block
    elif "type" in block:
        media = from_anthropic(block, where)
    else:  # Bedrock's {"image": {...}}
        kind = next(iter(block))
        media = from_converse(kind, block[kind], where)
    limits.check(media, where)
    return media


def _block(block: Any, role: str, where: str, limits: MediaLimits) -> RequestBlock | None:
    """One content block of a message (``None`` for blocks that carry nothing for a model)."""
    if isinstance(block, str):
        return TextBlock(block)
    if isinstance(block, MediaBlock):
        parsed: RequestBlock = _media(block, where, limits)
    elif isinstance(block, TextBlock | ToolUseBlock | ThinkingBlock | ToolResultBlock):
        parsed = block
    elif not isinstance(block, Mapping):
        raise InvalidRequestError("expected a content block object", path=where)
    else:
        kind = block.get("type") or ("text" if "text" in block else next(iter(block), "?"))
        if kind == "text":
            return TextBlock(_text_field(block, "text", where))
        if kind == "tool_use":
            tool_input = block.get("input", {})
            if not isinstance(tool_input, Mapping):
                raise InvalidRequestError("expected an object", path=f"{where}.input")
            parsed = ToolUseBlock(
                id=_text_field(block, "id", where),
                name=_text_field(block, "name", where),
                input=dict(tool_input),
            )
        elif kind == "tool_result":
            is_error = block.get("is_error", False)
            if not isinstance(is_error, bool):
                raise InvalidRequestError("expected a boolean", path=f"{where}.is_error")
            parsed = ToolResultBlock(
                tool_use_id=_text_field(block, "tool_use_id", where),
                content=_tool_result_content(block.get("content"), f"{where}.content", limits),
                is_error=is_error,
            )
        elif kind == "thinking":
            parsed = ThinkingBlock(
                thinking=_text_field(block, "thinking", where),
                signature=block.get("signature") or "",
            )
        elif kind in MEDIA_KINDS:
            parsed = _media(block, where, limits)
        elif kind == "redacted_thinking":
            return None  # encrypted reasoning: nothing a model here can read
        else:
            raise InvalidRequestError(
                f"content blocks of type {kind!r} are not supported "
                "(text, image, document, tool_use, tool_result and thinking are)",
                path=where,
            )
    wanted = "user" if parsed.type in ("tool_result", *MEDIA_KINDS) else "assistant"
    if parsed.type != "text" and role != wanted:
        raise InvalidRequestError(f"{parsed.type} blocks belong in {wanted} messages", path=where)
    return parsed


def _turn(role: Role, content: Any, where: str, limits: MediaLimits) -> Turn:
    if isinstance(content, str):
        return Turn(role, content)
    if isinstance(content, Mapping):
        content = [content]
    if not isinstance(content, list | tuple):
        raise InvalidRequestError("expected a string or a list of content blocks", path=where)
    blocks = [_block(block, role, f"{where}.{i}", limits) for i, block in enumerate(content)]
    kept = tuple(block for block in blocks if block is not None)
    text = "".join(block.text for block in kept if block.type == "text")
    if all(block.type == "text" for block in kept):
        return Turn(role, text)
    return Turn(role, text, kept)


def media_blocks(turns: Iterable[Turn]) -> list[MediaBlock]:
    """Every image, document and video of the conversation, tool results' included."""
    found: list[MediaBlock] = []
    for turn in turns:
        for block in turn.blocks:
            if block.type == "tool_result":
                found += [part for part in block.content if isinstance(part, MediaBlock)]
            elif isinstance(block, MediaBlock):
                found.append(block)
    return found


def _check_tool_results(turns: list[Turn], origin: list[int]) -> None:
    """Every tool result answers a call of the assistant turn just before it (``origin`` maps
    each turn to its index in the client's ``messages``)."""
    for i, turn in enumerate(turns):
        results = [block for block in turn.blocks if block.type == "tool_result"]
        if not results:
            continue
        before = turns[i - 1] if i else None
        calls = (
            {b.id for b in before.blocks if b.type == "tool_use"}
            if before is not None and before.role == "assistant"
            else set()
        )
        for block in results:
            if block.tool_use_id not in calls:
                j = turn.blocks.index(block)
                raise InvalidRequestError(
                    f"{block.tool_use_id!r} "
                    "matches no tool_use block in the previous assistant message",
                    path=f"messages.{origin[i]}.content.{j}.tool_use_id",
                )


def check_object_schema(schema: Any, where: str) -> dict[str, Any]:
    """A JSON Schema for an object (what tools take and JSON output gives), within the cap."""
    if not isinstance(schema, Mapping):
        raise InvalidRequestError("expected a JSON Schema object", path=where)
    if schema.get("type", "object") != "object":
        raise InvalidRequestError("must be a JSON Schema of type 'object'", path=where)
    try:
        size = len(json.dumps(schema))
    except (TypeError, ValueError):
        raise InvalidRequestError("not serialisable as JSON", path=where) from None
    if size > MAX_SCHEMA_BYTES:
        raise InvalidRequestError(
            f"the schema is {size} bytes, more than the limit of {MAX_SCHEMA_BYTES}", path=where
        )
    return {"type": "object", **schema}


def _tools(tools: Any) -> list[Tool]:
    if tools is None:
        return []
    if not isinstance(tools, list | tuple):
        raise InvalidRequestError("expected a list of tools", path="tools")
    if len(tools) > MAX_TOOLS:
        raise InvalidRequestError(
            f"at most {MAX_TOOLS} tools are allowed, got {len(tools)}", path="tools"
        )
    parsed: list[Tool] = []
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        if isinstance(tool, Tool):
            name, description, schema = tool.name, tool.description, tool.input_schema
            strict = tool.strict
        elif isinstance(tool, Mapping):
            name, description = tool.get("name"), tool.get("description") or ""
            strict = _strict(tool.get("strict"), f"tools.{i}.strict")
            if "input_schema" not in tool:
                raise InvalidRequestError("field required", path=f"tools.{i}.input_schema")
            schema = tool["input_schema"]
        else:
            raise InvalidRequestError("expected an object", path=f"tools.{i}")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise InvalidRequestError(
                f"must match ^[a-zA-Z0-9_-]{{1,64}}$, got {name!r}", path=f"tools.{i}.name"
            )
        if name in seen:
            raise InvalidRequestError(f"duplicate tool name {name!r}", path=f"tools.{i}.name")
        if not isinstance(description, str):
            raise InvalidRequestError("expected a string", path=f"tools.{i}.description")
        seen.add(name)
        schema = check_object_schema(schema, f"tools.{i}.input_schema")
        parsed.append(Tool(name, description, schema, strict))
    return parsed


def _strict(value: Any, where: str) -> bool:
    if value is not None and not isinstance(value, bool):
        raise InvalidRequestError("expected a boolean", path=where)
    return bool(value)


def _tool_choice(choice: Any, tools: list[Tool]) -> ToolChoice:
    if choice is None:
        return ToolChoice()
    if isinstance(choice, ToolChoice):
        parsed = choice
    elif isinstance(choice, Mapping):
        kind = choice.get("type")
        if kind not in TOOL_CHOICES:
            raise InvalidRequestError(
                f"must be one of {', '.join(TOOL_CHOICES)}, got {kind!r}", path="tool_choice.type"
            )
        disable = choice.get("disable_parallel_tool_use", False)
        if not isinstance(disable, bool):
            raise InvalidRequestError(
                "expected a boolean", path="tool_choice.disable_parallel_tool_use"
            )
        name = choice.get("name")
        if kind == "tool" and not isinstance(name, str):
            raise InvalidRequestError("field required for type 'tool'", path="tool_choice.name")
        parsed = ToolChoice(kind, name if kind == "tool" else None, disable)
    else:
        raise InvalidRequestError("expected an object", path="tool_choice")
    if parsed.type in ("any", "tool") and not tools:
        raise InvalidRequestError(
            f"type {parsed.type!r} needs at least one tool", path="tool_choice"
        )
    if parsed.type == "tool" and not any(tool.name == parsed.name for tool in tools):
        raise InvalidRequestError(
            f"no tool named {parsed.name!r} in tools", path="tool_choice.name"
        )
    return parsed


def _with_text(turn: Turn, text: str, *, before: bool) -> Turn:
    """``turn`` with a paragraph of text added at its start or end."""
    if not turn.blocks:
        joined = f"{text}\n\n{turn.content}" if before else f"{turn.content}\n\n{text}"
        return Turn(turn.role, joined)
    blocks = (TextBlock(text), *turn.blocks) if before else (*turn.blocks, TextBlock(text))
    content = "".join(block.text for block in blocks if block.type == "text")
    return Turn(turn.role, content, blocks)


def _place_system_messages(
    turns: list[Turn], notes: list[tuple[int, str]]
) -> tuple[list[Turn], list[str]]:
    """System-role messages inside ``messages`` (today's Anthropic API), kept in place.

    ``notes`` are ``(number of turns before it, text)``. Those before the first turn join the
    system prompt; a later one is a paragraph of the user turn it follows (or, after an
    assistant turn, of the user turn that comes next), so the model reads it where it was said.
    """
    leading = [text for before, text in notes if before == 0]
    for before, text in (note for note in notes if note[0] > 0):
        labelled = SYSTEM_LABEL + text
        if turns[before - 1].role == "user":
            turns[before - 1] = _with_text(turns[before - 1], labelled, before=False)
        elif before < len(turns) and turns[before].role == "user":
            turns[before] = _with_text(turns[before], labelled, before=True)
        else:  # between two assistant turns: nowhere better than the system prompt
            leading.append(text)
    return turns, leading


def _thinking(thinking: Any, max_tokens: int) -> ThinkingConfig | None:
    if thinking is None:
        return None
    if isinstance(thinking, ThinkingConfig):
        return thinking
    if not isinstance(thinking, Mapping):
        raise InvalidRequestError("expected an object", path="thinking")
    kind = thinking.get("type")
    if kind not in THINKING_TYPES:
        raise InvalidRequestError(
            f"must be one of {', '.join(THINKING_TYPES)}, got {kind!r}", path="thinking.type"
        )
    if kind == "disabled":
        return None
    budget = thinking.get("budget_tokens")
    if kind == "enabled":
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise InvalidRequestError("field required (an integer)", path="thinking.budget_tokens")
        if budget < MIN_THINKING_BUDGET:
            raise InvalidRequestError(
                f"must be at least {MIN_THINKING_BUDGET}, got {budget}",
                path="thinking.budget_tokens",
            )
        if budget >= max_tokens:
            raise InvalidRequestError(
                f"must be less than max_tokens ({max_tokens})", path="thinking.budget_tokens"
            )
    return ThinkingConfig(kind, budget if kind == "enabled" else None)


def _output_format(value: Any) -> OutputFormat | None:
    """``{"type": "json_schema", "schema": {...}}`` or ``{"type": "json_object"}``."""
    if value is None or isinstance(value, OutputFormat):
        return value
    if not isinstance(value, Mapping):
        raise InvalidRequestError("expected an object", path="output_format")
    kind = value.get("type")
    if kind == "json_object":
        return OutputFormat()
    if kind != "json_schema":
        raise InvalidRequestError(
            f"must be 'json_schema' or 'json_object', got {kind!r}", path="output_format.type"
        )
    if "schema" not in value:
        raise InvalidRequestError("field required", path="output_format.schema")
    name = value.get("name")
    schema = check_object_schema(value["schema"], "output_format.schema")
    return OutputFormat(schema, name, _strict(value.get("strict"), "output_format.strict"))


def build_request(
    *,
    model: str,
    messages: Any,
    max_tokens: Any = 1024,
    system: Any = None,
    temperature: Any = None,
    top_p: Any = None,
    top_k: Any = None,
    stop_sequences: Any = None,
    seed: Any = None,
    tools: Any = None,
    tool_choice: Any = None,
    thinking: Any = None,
    output_format: Any = None,
    max_tokens_limit: int = MAX_TOKENS_LIMIT,
    media_limits: MediaLimits = ANTHROPIC_LIMITS,
) -> MessageRequest:
    """Validate and normalise a request; every error names the offending field. Images and
    documents are held to ``media_limits`` (the limits of the service whose protocol spoke)."""
    if not isinstance(messages, list | tuple) or not messages:
        raise InvalidRequestError("at least one message is required", path="messages")
    turns: list[Turn] = []
    origin: list[int] = []  # each turn's index in messages
    notes: list[tuple[int, str]] = []  # system-role messages: (turns before, text)
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidRequestError(
                "expected an object with role and content", path=f"messages.{i}"
            )
        role = message.get("role")
        if role not in ("user", "assistant", "system"):
            raise InvalidRequestError(
                f"must be 'user', 'assistant' or 'system', got {role!r}", path=f"messages.{i}.role"
            )
        if "content" not in message:
            raise InvalidRequestError("field required", path=f"messages.{i}.content")
        if role == "system":
            notes.append((len(turns), content_text(message["content"], f"messages.{i}.content")))
            continue
        turns.append(_turn(role, message["content"], f"messages.{i}.content", media_limits))
        origin.append(i)
    if not turns:
        raise InvalidRequestError("at least one user message is required", path="messages")
    if turns[-1].role != "user":
        raise InvalidRequestError("the last message must have role 'user'", path="messages")
    _check_tool_results(turns, origin)
    media_limits.check_counts(media_blocks(turns))
    if notes:
        turns, leading = _place_system_messages(turns, notes)
        if leading:
            given = [content_text(system, "system")] if system is not None else []
            system = "\n\n".join(text for text in [*given, *leading] if text)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InvalidRequestError("expected an integer", path="max_tokens")
    if not 1 <= max_tokens <= max_tokens_limit:
        raise InvalidRequestError(
            f"must be between 1 and {max_tokens_limit}, got {max_tokens}", path="max_tokens"
        )
    if system is not None:
        system = content_text(system, "system")
    if stop_sequences is None:
        stop_sequences = []
    elif isinstance(stop_sequences, str):
        stop_sequences = [stop_sequences]
    if not isinstance(stop_sequences, list | tuple) or not all(
        isinstance(s, str) and s for s in stop_sequences
    ):
        raise InvalidRequestError("expected a list of non-empty strings", path="stop_sequences")
    if len(stop_sequences) > MAX_STOP_SEQUENCES:
        raise InvalidRequestError(
            f"at most {MAX_STOP_SEQUENCES} are allowed", path="stop_sequences"
        )
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise InvalidRequestError("expected a non-negative integer", path="top_k")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidRequestError("expected an integer", path="seed")
    parsed_tools = _tools(tools)
    return MessageRequest(
        model=model,
        messages=turns,
        max_tokens=max_tokens,
        system=system or None,
        temperature=_number(temperature, "temperature", 0.0, 2.0),
        top_p=_number(top_p, "top_p", 0.0, 1.0),
        top_k=top_k,
        stop_sequences=list(stop_sequences),
        seed=seed,
        tools=parsed_tools,
        tool_choice=_tool_choice(tool_choice, parsed_tools),
        thinking=_thinking(thinking, max_tokens),
        output_format=_output_format(output_format),
    )
