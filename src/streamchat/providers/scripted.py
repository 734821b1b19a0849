"""A deterministic provider for tests, demos and load: scripted text, timing and faults.

Configured by the model name, e.g. ``scripted?delay=0.02&error_after=5&error=overloaded_error``:

- ``text``: the reply (default: ``[turn N] You said: <last user message>``), ``repeat``: times
- ``delay`` / ``first_delay``: seconds per token / before the first token
- ``error_before``: error type raised before streaming; ``error_after=N`` + ``error=TYPE``: an
  ``error`` event after N tokens
- ``stall_after=N`` (+ ``stall=SECONDS``, default an hour): stop sending after N tokens
- ``record=PATH``: append each request it receives as a JSON line
- ``cache_read=N`` / ``cache_write=N``: report N prompt-cache tokens read / written in usage,
  as a backend with a prompt cache does
- ``thinking=TEXT``: a thinking block (and its signature) before the reply
- ``tool_input=JSON`` (default ``{}``), ``calls=N``: when the request offers tools (and its last
  turn is not a tool result) the reply is N calls of the chosen tool (the named one, else the
  first) with that input, streamed in JSON fragments; after a tool result it answers in text
- ``tag``: a free label; distinct specs get distinct instances (and counters)

Tokens are words with their leading space. It is never the default provider.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import parse_qs

from ..errors import InvalidRequestError, error_from_type
from ..events import ErrorBody, ErrorEvent, StreamEvent
from ..request import MessageRequest, prompt_too_long
from ..stop_sequences import StopMatcher
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
)

JSON_FRAGMENT = 8  # characters of a tool input per scripted token

_TOKEN = re.compile(r"\s*\S+|\s+")


def tokenize(text: str) -> list[str]:
    """Split text into word tokens that join back to exactly ``text``."""
    return _TOKEN.findall(text)


@dataclass(slots=True)
class ScriptedConfig:
    text: str | None = None
    repeat: int = 1
    delay: float = 0.0
    first_delay: float = 0.0
    error_before: str | None = None
    error_after: int | None = None
    error: str = "api_error"
    stall_after: int | None = None
    stall: float = 3600.0
    record: str | None = None
    thinking: str | None = None
    tool_input: str = "{}"
    calls: int = 1
    tag: str = ""
    context: int = 0  # a context window (input tokens, as counted); 0: unlimited
    cache_read: int = -1  # prompt-cache tokens to report as read; -1: no prompt cache
    cache_write: int = -1

    @classmethod
    def parse(cls, spec: str) -> ScriptedConfig:
        _, _, query = spec.partition("?")
        fields = {f: type(v) for f, v in asdict(cls()).items()}
        numeric = {
            "repeat": int,
            "delay": float,
            "first_delay": float,
            "error_after": int,
            "stall_after": int,
            "stall": float,
            "calls": int,
            "context": int,
            "cache_read": int,
            "cache_write": int,
        }
        values: dict[str, Any] = {}
        for key, items in parse_qs(query, keep_blank_values=True).items():
            if key not in fields:
                raise InvalidRequestError(f"unknown scripted option {key!r}", path="model")
            try:
                values[key] = numeric[key](items[-1]) if key in numeric else items[-1]
            except ValueError as error:
                raise InvalidRequestError(f"scripted option {key}: {error}", path="model") from None
        config = cls(**values)
        try:
            json.loads(config.tool_input)
        except ValueError as error:
            raise InvalidRequestError(
                f"scripted option tool_input: {error}", path="model"
            ) from None
        return config


def _bytes_as_base64(value: Any) -> str:
    """An image's or document's bytes in a recorded request (JSON has no bytes)."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class ScriptedProvider:
    """Replays a script; counts what it was asked, so tests can check retries and cancellation."""

    name = "scripted"

    def __init__(self, config: ScriptedConfig | None = None):
        self.config = config or ScriptedConfig()
        self.requests: list[MessageRequest] = []
        self.completed = 0
        self.cancelled = 0
        self.active = 0
        self._lock = threading.Lock()

    def reply_for(self, request: MessageRequest) -> str:
        if self.config.text is not None:
            return self.config.text * self.config.repeat
        turn = sum(1 for t in request.messages if t.role == "user")
        last = request.messages[-1]
        results = [b.text for b in last.blocks if b.type == "tool_result"]
        said = f"Tool result: {' '.join(results)}" if results else f"You said: {last.content}"
        return " ".join([f"[turn {turn}] {said}"] * self.config.repeat)

    def calls_for(self, request: MessageRequest) -> list[str]:
        """The tools this reply calls: none after a tool result or when tools are not wanted."""
        last = request.messages[-1]
        if not request.wants_tools or any(b.type == "tool_result" for b in last.blocks):
            return []
        choice = request.tool_choice
        name = choice.name if choice.type == "tool" else request.tools[0].name
        return [name] * (1 if choice.disable_parallel_tool_use else max(1, self.config.calls))

    def script(self, request: MessageRequest) -> list[tuple[str, str]]:
        """The reply as ``(block kind, token)`` pairs; a block starts where its kind changes
        (``tool_use:NAME`` starts one call each time)."""
        parts: list[tuple[str, str]] = []
        if self.config.thinking and request.thinking is not None:
            parts += [("thinking", token) for token in tokenize(self.config.thinking)]
        calls = self.calls_for(request)
        if not calls:
            return parts + [("text", token) for token in tokenize(self.reply_for(request))]
        raw = json.dumps(json.loads(self.config.tool_input), ensure_ascii=False)
        for i, name in enumerate(calls):
            fragments = [raw[j : j + JSON_FRAGMENT] for j in range(0, len(raw), JSON_FRAGMENT)]
            parts += [(f"tool_use:{name}:{i}", fragment) for fragment in fragments]
        return parts

    def count_tokens(self, request: MessageRequest) -> int:
        """Input tokens as ``message_start`` reports them: words of the messages."""
        return sum(len(tokenize(t.content)) for t in request.messages)

    @property
    def n_ctx(self) -> int | None:
        """The context window (``context=N``), as the embedded model has one; ``None``: none."""
        return self.config.context or None

    def _record(self, request: MessageRequest) -> None:
        with self._lock:
            self.requests.append(request)
            if self.config.record:
                with open(self.config.record, "a", encoding="utf-8") as file:
                    line = json.dumps(asdict(request), ensure_ascii=False, default=_bytes_as_base64)
                    file.write(line + "\n")

    async def stream(self, request: MessageRequest) -> AsyncIterator[StreamEvent]:
        config = self.config
        self._record(request)
        if config.error_before:
            raise error_from_type(config.error_before, f"scripted {config.error_before}")
        parts = self.script(request)
        input_tokens = self.count_tokens(request)
        if config.context and input_tokens > config.context:
            raise prompt_too_long(input_tokens, config.context)
        self.active += 1
        finished = False
        try:
            opening = message_start(request.model, input_tokens)
            if config.cache_read >= 0:
                opening.message.usage.cache_read_input_tokens = config.cache_read  # type: ignore[attr-defined]
            if config.cache_write >= 0:
                opening.message.usage.cache_creation_input_tokens = config.cache_write  # type: ignore[attr-defined]
            yield opening
            if config.first_delay:
                await asyncio.sleep(config.first_delay)
            matcher = StopMatcher(request.stop_sequences)
            stop_reason, stop_sequence, sent = "end_turn", None, 0
            index, kind = -1, None
            for part, token in parts:
                if sent >= request.max_tokens:
                    stop_reason = "max_tokens"
                    break
                if config.error_after is not None and sent >= config.error_after:
                    finished = True  # set first: consumers stop reading at the final event
                    yield ErrorEvent(ErrorBody(config.error, f"scripted {config.error}"))
                    return
                if config.stall_after is not None and sent >= config.stall_after:
                    await asyncio.sleep(config.stall)
                if sent and config.delay:
                    await asyncio.sleep(config.delay)
                if part != kind:
                    if kind == "thinking":
                        yield signature_delta(
                            f"scripted-signature-{len(config.thinking or '')}", index
                        )
                    if kind is not None:
                        yield block_stop(index)
                    index, kind = index + 1, part
                    if part == "text":
                        yield text_block_start(index)
                    elif part == "thinking":
                        yield thinking_start(index)
                    else:
                        yield tool_use_start(index, part.split(":")[1])
                sent += 1
                if part == "thinking":
                    yield thinking_delta(token, index)
                    continue
                if part != "text":
                    yield input_json_delta(token, index)
                    continue
                text, hit = matcher.feed(token)
                if text:
                    yield text_delta(text, index)
                if hit is not None:
                    stop_reason, stop_sequence = "stop_sequence", hit
                    break
            if kind == "text" and stop_sequence is None and (tail := matcher.flush()):
                yield text_delta(tail, index)
            if kind is None:
                index = 0
                yield text_block_start(index)
            if stop_reason == "end_turn" and kind is not None and kind.startswith("tool_use"):
                stop_reason = "tool_use"
            yield block_stop(index)
            *closing, last = message_finish(stop_reason, sent, stop_sequence)
            for event in closing:
                yield event
            finished = True  # message_stop is final: the consumer closes us instead of reading on
            yield last
        finally:
            self.active -= 1
            if finished:
                self.completed += 1
            else:
                self.cancelled += 1
