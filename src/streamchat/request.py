"""The canonical request every provider receives, and the one place requests are validated.

Content may be a plain string, a list of Anthropic blocks (``{"type": "text", "text": ...}``) or
Bedrock blocks (``{"text": ...}``); all become plain text turns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import InvalidRequestError

Role = Literal["user", "assistant"]
MAX_TOKENS_LIMIT = 32_768
MAX_STOP_SEQUENCES = 16


@dataclass(slots=True, frozen=True)
class Turn:
    role: Role
    content: str


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


def content_text(content: Any, where: str) -> str:
    """Flatten message content (string or text blocks) to text; ``where`` names the field."""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        content = [content]
    if not isinstance(content, Iterable):
        raise InvalidRequestError(f"{where}: expected a string or a list of content blocks")
    parts: list[str] = []
    for i, block in enumerate(content):
        if isinstance(block, str):
            parts.append(block)
            continue
        if not isinstance(block, Mapping):
            raise InvalidRequestError(f"{where}.{i}: expected a content block object")
        kind = block.get("type", "text")
        if kind != "text" or not isinstance(block.get("text"), str):
            raise InvalidRequestError(
                f"{where}.{i}: only text content blocks are supported (got type {kind!r})"
            )
        parts.append(block["text"])
    return "".join(parts)


def _number(value: Any, name: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"{name}: expected a number")
    if not low <= value <= high:
        raise InvalidRequestError(f"{name}: must be between {low:g} and {high:g}, got {value}")
    return float(value)


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
    max_tokens_limit: int = MAX_TOKENS_LIMIT,
) -> MessageRequest:
    """Validate and normalise a request; every error names the offending field."""
    if not isinstance(messages, list | tuple) or not messages:
        raise InvalidRequestError("messages: at least one message is required")
    turns: list[Turn] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidRequestError(f"messages.{i}: expected an object with role and content")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise InvalidRequestError(
                f"messages.{i}.role: must be 'user' or 'assistant', got {role!r}"
            )
        if "content" not in message:
            raise InvalidRequestError(f"messages.{i}.content: field required")
        turns.append(Turn(role, content_text(message["content"], f"messages.{i}.content")))
    if turns[-1].role != "user":
        raise InvalidRequestError("messages: the last message must have role 'user'")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InvalidRequestError("max_tokens: expected an integer")
    if not 1 <= max_tokens <= max_tokens_limit:
        raise InvalidRequestError(
            f"max_tokens: must be between 1 and {max_tokens_limit}, got {max_tokens}"
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
        raise InvalidRequestError("stop_sequences: expected a list of non-empty strings")
    if len(stop_sequences) > MAX_STOP_SEQUENCES:
        raise InvalidRequestError(f"stop_sequences: at most {MAX_STOP_SEQUENCES} are allowed")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise InvalidRequestError("top_k: expected a non-negative integer")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidRequestError("seed: expected an integer")
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
    )
